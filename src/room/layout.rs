//! Layout maths: where each tile of the composite goes. Pure functions, unit-tested.

use serde::Serialize;

/// A rectangle in pixels of the composite output; `x`, `y` top-left, all even so I420 chroma
/// planes stay aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rect {
    /// Left edge, pixels.
    pub x: u32,
    /// Top edge, pixels.
    pub y: u32,
    /// Width, pixels.
    pub w: u32,
    /// Height, pixels.
    pub h: u32,
}

/// Returns the grid cells, in pixels of the `width`×`height` output, for `n` tiles in join order:
/// `cols = ceil(sqrt(n))`, `rows = ceil(n / cols)`, rows filled left to right, top to bottom.
/// Cells split the whole frame (the last row is not centred); each cell is rounded down to even
/// sizes. Returns an empty list for `n == 0`.
pub fn grid(n: usize, width: u32, height: u32) -> Vec<Rect> {
    if n == 0 {
        return vec![];
    }
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let cw = even(width / cols);
    let ch = even(height / rows);
    (0..n as u32)
        .map(|i| Rect { x: even((i % cols) * width / cols), y: even((i / cols) * height / rows), w: cw, h: ch })
        .collect()
}

/// Fits a `src_w`×`src_h` picture into `cell` keeping its aspect ratio (letterbox or pillarbox),
/// centred; the result's sizes are even and at least 2. A zero-sized source fills the cell.
pub fn letterbox(cell: Rect, src_w: u32, src_h: u32) -> Rect {
    if src_w == 0 || src_h == 0 {
        return cell;
    }
    // Compare aspect ratios in integers: src_w/src_h vs cell.w/cell.h.
    let (w, h) = if (src_w as u64) * (cell.h as u64) > (cell.w as u64) * (src_h as u64) {
        (cell.w, (cell.w as u64 * src_h as u64 / src_w as u64) as u32)
    } else {
        ((cell.h as u64 * src_w as u64 / src_h as u64) as u32, cell.h)
    };
    let (w, h) = (even(w).max(2), even(h).max(2));
    Rect { x: cell.x + even((cell.w - w) / 2), y: cell.y + even((cell.h - h) / 2), w, h }
}

fn even(v: u32) -> u32 {
    v & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_shapes_follow_ceil_sqrt() {
        assert!(grid(0, 1280, 720).is_empty());
        assert_eq!(grid(1, 1280, 720), vec![Rect { x: 0, y: 0, w: 1280, h: 720 }]);
        let g2 = grid(2, 1280, 720);
        assert_eq!(g2[1], Rect { x: 640, y: 0, w: 640, h: 720 });
        let g3 = grid(3, 1280, 720); // 2 cols x 2 rows
        assert_eq!(g3[2], Rect { x: 0, y: 360, w: 640, h: 360 });
        let g5 = grid(5, 1280, 720); // 3 cols x 2 rows
        assert_eq!(g5[4].y, 360);
        assert_eq!(g5[4].x, 426);
        assert_eq!(g5[0].w, 426);
        let g10 = grid(10, 1280, 720); // 4 x 3
        assert_eq!(g10.len(), 10);
        assert_eq!(g10[9], Rect { x: 320, y: 480, w: 320, h: 240 });
    }

    #[test]
    fn cells_stay_inside_the_frame_and_do_not_overlap() {
        for n in 1..=30 {
            let g = grid(n, 1280, 720);
            for (i, a) in g.iter().enumerate() {
                assert!(a.x + a.w <= 1280 && a.y + a.h <= 720, "n={n} {a:?}");
                for b in &g[i + 1..] {
                    let disjoint = a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
                    assert!(disjoint, "n={n} {a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn letterbox_keeps_aspect() {
        let cell = Rect { x: 640, y: 0, w: 640, h: 720 };
        // 16:9 into a tall cell: full width, centred vertically.
        assert_eq!(letterbox(cell, 640, 360), Rect { x: 640, y: 180, w: 640, h: 360 });
        // 4:3 into a 16:9 cell: pillarbox.
        let wide = Rect { x: 0, y: 0, w: 1280, h: 720 };
        assert_eq!(letterbox(wide, 640, 480), Rect { x: 160, y: 0, w: 960, h: 720 });
        assert_eq!(letterbox(wide, 0, 0), wide);
    }
}
