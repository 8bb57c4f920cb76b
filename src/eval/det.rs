//! DET curve (FNIR against FPIR, both on log axes, as NIST's identification reports draw
//! them) as a self-contained SVG: one colour per split, solid for facestream and dashed
//! for the reference.

use std::fmt::Write;

/// One curve: `(fpir, fnir)` points.
pub struct DetCurve<'a> {
    pub label: String,
    pub points: &'a [(f64, f64)],
    pub colour: &'a str,
    pub dashed: bool,
}

const FPIR_MIN: f64 = 1e-4;
const FNIR_MIN: f64 = 1e-3;

/// Render the curves; points with FPIR below 1e-4 or FNIR below 1e-3 are clamped to the
/// frame.
pub fn svg(title: &str, curves: &[DetCurve<'_>]) -> String {
    let frame = super::roc::Frame::standard();
    let (left, top, pw, ph) = (frame.left, frame.top, frame.pw, frame.ph);
    let x = |v: f64| left + (1.0 - v.max(FPIR_MIN).log10() / FPIR_MIN.log10()) * pw;
    let y = |v: f64| top + (v.max(FNIR_MIN).log10() / FNIR_MIN.log10()) * ph;
    let mut s = String::new();
    frame.open(&mut s, title);
    for d in 0..=4 {
        let gx = x(10f64.powi(-d));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">1e-{d}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    for d in 0..=3 {
        let gy = y(10f64.powi(-d));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">1e-{d}</text>"##,
            left + pw,
            left - 6.0,
            gy + 4.0
        );
    }
    frame.axes(
        &mut s,
        "false positive identification rate (strangers matched; log)",
        "false negative identification rate (log)",
    );
    for (i, c) in curves.iter().enumerate() {
        let path: String = c
            .points
            .iter()
            .enumerate()
            .map(|(k, &(fpir, fnir))| {
                format!(
                    "{}{:.1},{:.1} ",
                    if k == 0 { 'M' } else { 'L' },
                    x(fpir),
                    y(fnir)
                )
            })
            .collect();
        let dash = if c.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            c.colour
        );
        let ly = top + 16.0 + 16.0 * i as f64;
        let lx = left + pw - 250.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            c.colour,
            lx + 25.0,
            ly + 4.0,
            super::roc::escape(&c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_per_curve_dashed_where_asked() {
        let pts = [(1e-4, 0.5), (1e-2, 0.1), (1.0, 0.0)];
        let out = svg(
            "DET <split>",
            &[
                DetCurve {
                    label: "facestream".into(),
                    points: &pts,
                    colour: "red",
                    dashed: false,
                },
                DetCurve {
                    label: "ref & co".into(),
                    points: &pts,
                    colour: "red",
                    dashed: true,
                },
            ],
        );
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<path").count(), 2);
        assert_eq!(
            out.matches("stroke-dasharray").count(),
            2,
            "path and legend"
        );
        assert!(out.contains("DET &lt;split&gt;") && out.contains("ref &amp; co"));
    }
}
