//! ROC curve as a self-contained SVG (log-scale false accept rate, as face-recognition
//! ROCs are read), with the operating points the report quotes marked.

use std::fmt::Write;

/// One curve to draw.
pub struct Curve<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64, f32)],
    pub colour: &'a str,
}

/// Render curves with FAR on a log axis from `min_far` to 1. The TAR axis starts at the
/// lowest TAR any curve reaches within that FAR range, rounded down to 0.05, so a
/// near-perfect curve is not flattened against the top edge.
pub fn svg(title: &str, curves: &[Curve<'_>], min_far: f64) -> String {
    let tar_low = curves
        .iter()
        .filter_map(|c| c.points.iter().find(|p| p.0 >= min_far).map(|p| p.1))
        .fold(1.0f64, f64::min);
    let y_min = ((tar_low * 20.0).floor() / 20.0).clamp(0.0, 0.95);
    let frame = Frame::standard();
    let (left, top, pw, ph) = (frame.left, frame.top, frame.pw, frame.ph);
    let lo = min_far.log10();
    let x = |far: f64| left + ((far.max(min_far).log10() - lo) / -lo) * pw;
    let y = |tar: f64| top + (1.0 - (tar.max(y_min) - y_min) / (1.0 - y_min)) * ph;
    let mut s = String::new();
    frame.open(&mut s, title);
    let decades = (-lo).round() as i32;
    for d in 0..=decades {
        let far = 10f64.powi(-d);
        let gx = x(far);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{}" stroke="#ddd"/>"##,
            top + ph
        );
        let label = if d == 0 {
            "1".to_string()
        } else {
            format!("1e-{d}")
        };
        let _ = writeln!(
            s,
            r#"<text x="{gx:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            top + ph + 18.0
        );
    }
    let steps = ((1.0 - y_min) / 0.01).round() as i32;
    let every = if steps > 20 { 10 } else { 1 };
    for k in (0..=steps).filter(|k| k % every == 0) {
        let tar = y_min + k as f64 * 0.01;
        let gy = y(tar);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#eee"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{tar:.2}</text>"#,
            left - 6.0,
            gy + 4.0
        );
    }
    frame.axes(&mut s, "false accept rate (log)", "true accept rate");
    for (i, c) in curves.iter().enumerate() {
        let mut path = String::new();
        for (k, &(far, tar, _)) in c.points.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if k == 0 { "M" } else { "L" },
                x(far),
                y(tar)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{}" stroke-width="2"/>"#,
            c.colour
        );
        let ly = top + ph - 14.0 - 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/>"#,
            left + 10.0,
            left + 30.0,
            c.colour
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            left + 35.0,
            ly + 4.0,
            escape(c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The plot area both curve plots ([`svg`], [`super::det::svg`]) draw in: a 640×480 SVG
/// with margins for the axis labels.
pub(crate) struct Frame {
    pub w: f64,
    pub h: f64,
    pub left: f64,
    pub top: f64,
    /// Plot width and height.
    pub pw: f64,
    pub ph: f64,
}

impl Frame {
    pub(crate) fn standard() -> Frame {
        let (w, h, left, right, top, bottom) = (640.0, 480.0, 70.0, 20.0, 40.0, 60.0);
        Frame {
            w,
            h,
            left,
            top,
            pw: w - left - right,
            ph: h - top - bottom,
        }
    }

    /// The SVG element, a white background and the title.
    pub(crate) fn open(&self, s: &mut String, title: &str) {
        let (w, h) = (self.w, self.h);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            w / 2.0,
            escape(title)
        );
    }

    /// The plot's border and the two axis labels.
    pub(crate) fn axes(&self, s: &mut String, x_label: &str, y_label: &str) {
        let (left, top, pw, ph) = (self.left, self.top, self.pw, self.ph);
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            self.h - 14.0,
            escape(x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">{1}</text>"#,
            top + ph / 2.0,
            escape(y_label)
        );
    }
}

pub(crate) fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_path_per_curve_and_escapes_labels() {
        let pts = [(0.0, 0.0, 1.0), (0.001, 0.9, 0.5), (1.0, 1.0, 0.0)];
        let out = svg(
            "a < b",
            &[Curve {
                label: "x&y",
                points: &pts,
                colour: "red",
            }],
            1e-4,
        );
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<path").count(), 1);
        assert!(out.contains("a &lt; b") && out.contains("x&amp;y"));
    }
}
