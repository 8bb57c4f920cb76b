//! Masks: polygons of a camera's frame to ignore, in fractions of the frame (0–1).

/// A set of polygons; a point inside any of them is masked (even-odd rule per polygon).
#[derive(Debug, Clone, Default)]
pub struct Mask {
    polygons: Vec<Vec<[f32; 2]>>,
}

impl Mask {
    /// Polygons already checked by [`Mask::check_polygon`] (config validation).
    pub fn new(polygons: &[Vec<[f32; 2]>]) -> Mask {
        Mask {
            polygons: polygons.iter().filter(|p| p.len() >= 3).cloned().collect(),
        }
    }

    /// Why a polygon is not usable, if it is not.
    pub fn check_polygon(polygon: &[[f32; 2]]) -> Result<(), String> {
        if polygon.len() < 3 {
            return Err(format!(
                "a polygon needs at least 3 points, got {}",
                polygon.len()
            ));
        }
        if let Some(p) = polygon
            .iter()
            .find(|p| !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]))
        {
            return Err(format!(
                "point [{}, {}] is outside the frame: coordinates are fractions within [0, 1]",
                p[0], p[1]
            ));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }

    /// Whether `p` (fractions of the frame) lies inside any polygon.
    pub fn contains(&self, p: [f32; 2]) -> bool {
        self.polygons.iter().any(|poly| inside(poly, p))
    }
}

/// Even-odd ray casting.
fn inside(poly: &[[f32; 2]], p: [f32; 2]) -> bool {
    let mut result = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
            if p[0] < x {
                result = !result;
            }
        }
        j = i;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_inside_convex_and_concave_polygons() {
        // an L shape: the square minus its top-right quarter
        let l = vec![
            [0.0, 0.0],
            [0.5, 0.0],
            [0.5, 0.5],
            [1.0, 0.5],
            [1.0, 1.0],
            [0.0, 1.0],
        ];
        let m = Mask::new(&[l]);
        assert!(m.contains([0.25, 0.25]));
        assert!(m.contains([0.75, 0.75]));
        assert!(!m.contains([0.75, 0.25]));
        assert!(!Mask::default().contains([0.5, 0.5]));
    }

    #[test]
    fn polygons_are_checked() {
        assert!(Mask::check_polygon(&[[0.0, 0.0], [1.0, 0.0]]).is_err());
        let e = Mask::check_polygon(&[[0.0, 0.0], [1.0, 0.0], [1.0, 640.0]]).unwrap_err();
        assert!(e.contains("[1, 640]") && e.contains("fractions"), "{e}");
        assert!(Mask::check_polygon(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).is_ok());
    }
}
