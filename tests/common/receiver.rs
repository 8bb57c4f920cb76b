//! A webhook receiver on 127.0.0.1 that verifies Standard Webhooks signatures, for the
//! event tests (in-process deliverers and the `facestream serve` binary alike).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use facestream::events::signature;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Accept,
    Fail500,
    /// 500 on the first attempt of each event, then accept.
    FailFirst,
    /// Answer only after 2 s (longer than the sender's timeout in the tests).
    Slow,
    /// 307 to the same path on 127.0.0.1:<port> (a redirect the sender must not follow).
    RedirectTo(u16),
}

#[derive(Default)]
pub struct Received {
    /// (webhook-id, body) of every verified request, in arrival order.
    pub verified: Vec<(String, String)>,
    pub rejected_signatures: usize,
    pub attempts: HashMap<String, usize>,
}

enum Bind {
    Port(u16),
    Listener(std::net::TcpListener),
    /// HTTPS on a free port.
    Tls(Box<rustls::ServerConfig>),
}

pub struct Receiver {
    pub port: u16,
    pub state: Arc<Mutex<Received>>,
    pub server: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Start on `port` (0: any free port).
    pub fn start(port: u16, mode: Mode) -> Receiver {
        Self::serve(Bind::Port(port), mode)
    }

    /// Start on a free port, serving HTTPS with `tls`.
    pub fn start_tls(tls: rustls::ServerConfig, mode: Mode) -> Receiver {
        Self::serve(Bind::Tls(Box::new(tls)), mode)
    }

    /// Start on a listener the test already holds (see `ReservedPort`).
    pub fn start_on(listener: std::net::TcpListener, mode: Mode) -> Receiver {
        Self::serve(Bind::Listener(listener), mode)
    }

    fn serve(bind: Bind, mode: Mode) -> Receiver {
        let state = Arc::new(Mutex::new(Received::default()));
        let shared = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new(shared);
                let server = HttpServer::new(move || {
                    App::new().app_data(data.clone()).route(
                        "/hook",
                        web::post().to(
                            move |req: HttpRequest,
                                  body: web::Bytes,
                                  st: web::Data<Arc<Mutex<Received>>>| async move {
                                let h = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string()
                                };
                                let (id, ts, sig) = (
                                    h("webhook-id"),
                                    h("webhook-timestamp"),
                                    h("webhook-signature"),
                                );
                                let now = chrono::Utc::now().timestamp();
                                let ok = ts
                                    .parse()
                                    .map(|ts| {
                                        signature::verify(SECRET, &id, ts, &body, &sig, now, 300)
                                            .is_ok()
                                    })
                                    .unwrap_or(false);
                                let accept = {
                                    let mut s = st.lock().unwrap();
                                    if !ok {
                                        s.rejected_signatures += 1;
                                        return HttpResponse::Unauthorized().finish();
                                    }
                                    let n = {
                                        let a = s.attempts.entry(id.clone()).or_default();
                                        *a += 1;
                                        *a
                                    };
                                    s.verified
                                        .push((id, String::from_utf8_lossy(&body).into_owned()));
                                    match mode {
                                        Mode::Accept | Mode::Slow => true,
                                        Mode::Fail500 => false,
                                        Mode::FailFirst => n > 1,
                                        Mode::RedirectTo(port) => {
                                            return HttpResponse::TemporaryRedirect()
                                                .insert_header((
                                                    "location",
                                                    format!("http://127.0.0.1:{port}/hook"),
                                                ))
                                                .finish();
                                        }
                                    }
                                };
                                if mode == Mode::Slow {
                                    actix_web::rt::time::sleep(std::time::Duration::from_secs(2))
                                        .await;
                                }
                                if accept {
                                    HttpResponse::NoContent().finish()
                                } else {
                                    HttpResponse::InternalServerError().finish()
                                }
                            },
                        ),
                    )
                })
                .workers(1);
                let server = match bind {
                    Bind::Port(port) => server.bind(("127.0.0.1", port)),
                    Bind::Listener(listener) => server.listen(listener),
                    Bind::Tls(tls) => server.bind_rustls_0_23(("127.0.0.1", 0), *tls),
                }
                .unwrap();
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                server.await.unwrap();
            })
        });
        let (port, server) = rx.recv().unwrap();
        Receiver {
            port,
            state,
            server,
        }
    }

    pub fn accepted_ids(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.verified.iter().map(|(id, _)| id.clone()).collect()
    }
}
