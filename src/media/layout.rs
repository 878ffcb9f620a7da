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

/// The parts of a `width`×`height` output no rectangle of `rects` covers, as rectangles: the
/// background between and around tiles. Bands between the distinct top and bottom edges, each
/// split where the rectangles crossing it leave gaps; for the even-aligned rectangles of a layout
/// the pieces are even too. Together with `rects` they cover the output exactly once where
/// `rects` do not overlap.
pub fn uncovered(width: u32, height: u32, rects: &[Rect]) -> Vec<Rect> {
    let rects: Vec<Rect> = rects
        .iter()
        .filter(|r| r.w > 0 && r.h > 0 && r.x < width && r.y < height)
        .map(|r| Rect { x: r.x, y: r.y, w: r.w.min(width - r.x), h: r.h.min(height - r.y) })
        .collect();
    let mut ys: Vec<u32> = vec![0, height];
    for r in &rects {
        ys.extend([r.y, r.y + r.h]);
    }
    ys.sort_unstable();
    ys.dedup();
    let mut out = vec![];
    for band in ys.windows(2) {
        let (y0, y1) = (band[0], band[1]);
        let mut spans: Vec<(u32, u32)> =
            rects.iter().filter(|r| r.y < y1 && y0 < r.y + r.h).map(|r| (r.x, r.x + r.w)).collect();
        spans.sort_unstable();
        let mut x = 0;
        for (a, b) in spans {
            if a > x {
                out.push(Rect { x, y: y0, w: a - x, h: y1 - y0 });
            }
            x = x.max(b);
        }
        if x < width {
            out.push(Rect { x, y: y0, w: width - x, h: y1 - y0 });
        }
    }
    out
}

fn even(v: u32) -> u32 {
    v & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_and_tiles_cover_the_output_exactly_once() {
        for n in 0..=10 {
            let cells: Vec<Rect> = grid(n, 1280, 720).into_iter().map(|c| letterbox(c, 640, 480)).collect();
            let bg = uncovered(1280, 720, &cells);
            let mut hits = vec![0u8; 1280 * 720];
            for r in cells.iter().chain(&bg) {
                assert!(r.x % 2 == 0 && r.y % 2 == 0 && r.w % 2 == 0 && r.h % 2 == 0, "{r:?} is even");
                for y in r.y..r.y + r.h {
                    for x in r.x..r.x + r.w {
                        hits[(y * 1280 + x) as usize] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "{n} tiles: every pixel once");
        }
        assert_eq!(uncovered(64, 64, &[]), vec![Rect { x: 0, y: 0, w: 64, h: 64 }]);
    }

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

/// How a room's composite is arranged. JSON: `{"layout": "grid"}`, `{"layout": "speaker"}`,
/// `{"layout": "1+7"}` (one large tile and up to 7 small ones; `"2+21"` two large, 21 small;
/// `"1+N"` one large and everyone else small), `{"layout": "presentation"}`,
/// `{"layout": "pinned", "participant": ID}`, `{"layout": "custom", "tiles": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(try_from = "LayoutSpec", into = "LayoutSpec")]
pub enum Layout {
    /// Everyone visible in a ceil(sqrt(n)) grid, join order.
    Grid,
    /// The active speaker large, the others in a strip below.
    Speaker,
    /// `big` large tiles (the most recent speakers) above a strip of at most `small` tiles
    /// (`None`: everyone else).
    Featured {
        /// Large tiles, 1..=4.
        big: usize,
        /// Small tiles at most, or everyone else.
        small: Option<usize>,
    },
    /// The newest screen share large, cameras in a strip (speaker layout when nobody shares).
    Presentation,
    /// One chosen participant large, the others in a strip.
    Pinned {
        /// Participant id.
        participant: String,
    },
    /// Tiles at fixed places, in normalized coordinates.
    Custom {
        /// The tiles; unnamed ones are filled in join order.
        tiles: Vec<CustomTile>,
    },
}

/// One tile of a custom layout: position and size as fractions (0..=1) of the output, a z-order
/// (higher is drawn on top), and optionally whose video goes there.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CustomTile {
    /// Left edge, fraction of the width.
    pub x: f64,
    /// Top edge, fraction of the height.
    pub y: f64,
    /// Width, fraction.
    pub w: f64,
    /// Height, fraction.
    pub h: f64,
    /// Drawing order; higher on top. Default 0.
    #[serde(default)]
    pub z: u32,
    /// Participant id; `None` takes the next participant in join order not named elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
}

/// The wire form of [`Layout`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// `grid`, `speaker`, `B+K` or `1+N`, `presentation`, `pinned`, `custom`.
    pub layout: String,
    /// For `pinned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// For `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<Vec<CustomTile>>,
}

impl TryFrom<LayoutSpec> for Layout {
    type Error = String;
    fn try_from(s: LayoutSpec) -> Result<Self, String> {
        let extra = match s.layout.as_str() {
            "pinned" => s.tiles.is_some(),
            "custom" => s.participant.is_some(),
            _ => s.tiles.is_some() || s.participant.is_some(),
        };
        if extra {
            return Err(format!(
                "layout {:?} takes no {}",
                s.layout,
                if s.tiles.is_some() { "\"tiles\"" } else { "\"participant\"" }
            ));
        }
        Ok(match s.layout.as_str() {
            "grid" => Layout::Grid,
            "speaker" => Layout::Speaker,
            "presentation" => Layout::Presentation,
            "pinned" => Layout::Pinned { participant: s.participant.ok_or("layout \"pinned\" needs \"participant\"")? },
            "custom" => {
                let tiles = s.tiles.ok_or("layout \"custom\" needs \"tiles\"")?;
                if tiles.is_empty() || tiles.len() > 64 {
                    return Err("a custom layout has 1 to 64 tiles".into());
                }
                for t in &tiles {
                    let ok = [t.x, t.y, t.w, t.h].iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v))
                        && t.w > 0.0
                        && t.h > 0.0
                        && t.x + t.w <= 1.0 + 1e-9
                        && t.y + t.h <= 1.0 + 1e-9;
                    if !ok {
                        return Err(format!(
                            "custom tile {t:?}: x, y, w, h are fractions of the output and must stay inside it"
                        ));
                    }
                }
                Layout::Custom { tiles }
            }
            other => {
                let (b, k) = other.split_once('+').ok_or_else(|| format!("unknown layout {other:?}"))?;
                let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
                if !digits(b) || !(k == "N" || digits(k)) {
                    return Err(format!("unknown layout {other:?}"));
                }
                let big: usize = b.parse().map_err(|_| format!("unknown layout {other:?}"))?;
                let small = if k == "N" {
                    None
                } else {
                    Some(k.parse::<usize>().map_err(|_| format!("unknown layout {other:?}"))?)
                };
                if !(1..=4).contains(&big) || small.is_some_and(|k| k > 48) {
                    return Err(format!("layout {other:?}: 1 to 4 large tiles and at most 48 small ones"));
                }
                Layout::Featured { big, small }
            }
        })
    }
}

impl From<Layout> for LayoutSpec {
    fn from(l: Layout) -> Self {
        let name = l.name();
        match l {
            Layout::Pinned { participant } => LayoutSpec { layout: name, participant: Some(participant), tiles: None },
            Layout::Custom { tiles } => LayoutSpec { layout: name, participant: None, tiles: Some(tiles) },
            _ => LayoutSpec { layout: name, participant: None, tiles: None },
        }
    }
}

impl Layout {
    /// The layout's name as the API writes it (`grid`, `1+7`, ...).
    pub fn name(&self) -> String {
        match self {
            Layout::Grid => "grid".into(),
            Layout::Speaker => "speaker".into(),
            Layout::Featured { big, small: None } => format!("{big}+N"),
            Layout::Featured { big, small: Some(k) } => format!("{big}+{k}"),
            Layout::Presentation => "presentation".into(),
            Layout::Pinned { .. } => "pinned".into(),
            Layout::Custom { .. } => "custom".into(),
        }
    }
}

/// A participant that can be shown, as the layout sees it.
#[derive(Debug, Clone)]
pub struct TileSource {
    /// Participant id.
    pub id: String,
    /// A screen share (`source=screen`).
    pub screen: bool,
    /// When it last spoke (any monotonic tick; larger is more recent), `None` if never.
    pub last_spoke: Option<u64>,
}

/// Where one participant is drawn: its cell (the picture is letterboxed inside) and z-order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Participant id.
    pub participant: String,
    /// The cell, output pixels.
    pub cell: Rect,
    /// Drawing order, higher on top.
    pub z: u32,
    /// A large (featured) tile.
    pub featured: bool,
}

/// Places `sources` (in join order) for `layout` on a `width`×`height` output, showing at most
/// `cap` tiles. Past the cap the most recent speakers are shown (last-N), then join order; the
/// rest get no placement (and are not decoded). `speaker` is the active speaker's id.
pub fn place(
    layout: &Layout,
    sources: &[TileSource],
    speaker: Option<&str>,
    width: u32,
    height: u32,
    cap: usize,
) -> Vec<Placement> {
    let cap = cap.max(1);
    // The featured tiles, by layout.
    let recent: Vec<&TileSource> = {
        let mut v: Vec<(usize, &TileSource)> = sources.iter().enumerate().collect();
        // Most recent speaker first; never-spoke last in join order.
        v.sort_by(|(ia, a), (ib, b)| b.last_spoke.cmp(&a.last_spoke).then(ia.cmp(ib)));
        v.into_iter().map(|(_, s)| s).collect()
    };
    let by_id = |id: &str| sources.iter().find(|s| s.id == id);
    let speaker_src = speaker.and_then(by_id).or_else(|| recent.first().copied());
    let (featured, small_max): (Vec<&TileSource>, Option<usize>) = match layout {
        Layout::Grid | Layout::Custom { .. } => (vec![], None),
        Layout::Speaker => (speaker_src.into_iter().collect(), None),
        Layout::Featured { big, small } => {
            let mut f: Vec<&TileSource> = speaker_src.into_iter().collect();
            for s in &recent {
                if f.len() >= *big {
                    break;
                }
                if !f.iter().any(|x| x.id == s.id) {
                    f.push(s);
                }
            }
            (f, *small)
        }
        Layout::Presentation => match sources.iter().rev().find(|s| s.screen) {
            Some(s) => (vec![s], None),
            None => (speaker_src.into_iter().collect(), None),
        },
        Layout::Pinned { participant } => (by_id(participant).or(speaker_src).into_iter().collect(), None),
    };
    if let Layout::Custom { tiles } = layout {
        return place_custom(tiles, sources, &recent, width, height, cap);
    }
    // The rest, limited by the cap (and the layout's small-tile count), chosen by recency.
    let room_for_small = cap.saturating_sub(featured.len()).min(small_max.unwrap_or(usize::MAX));
    let mut small_ids: Vec<&str> = recent
        .iter()
        .filter(|s| !featured.iter().any(|f| f.id == s.id))
        .take(room_for_small)
        .map(|s| s.id.as_str())
        .collect();
    // Shown in join order.
    small_ids.sort_by_key(|id| sources.iter().position(|s| s.id == *id));
    if featured.is_empty() {
        return grid(small_ids.len(), width, height)
            .into_iter()
            .zip(small_ids)
            .map(|(cell, id)| Placement { participant: id.to_string(), cell, z: 1, featured: false })
            .collect();
    }
    // Featured row(s) on top, strip of small tiles below (rows of up to 7).
    let n_small = small_ids.len();
    let strip_cols = n_small.clamp(1, 7) as u32;
    let strip_rows = n_small.div_ceil(7) as u32;
    // A small tile is 16:9 of its column, and the strip takes at most a quarter of the height for
    // one row, a third for more.
    let strip_max = if strip_rows <= 1 { height / 4 } else { height / 3 };
    let small_h = if n_small == 0 { 0 } else { even(((width / strip_cols) * 9 / 16).min(strip_max / strip_rows)) };
    let strip_h = small_h * strip_rows;
    let big_h = height - strip_h;
    let nb = featured.len() as u32;
    let mut out: Vec<Placement> = featured
        .iter()
        .enumerate()
        .map(|(i, s)| Placement {
            participant: s.id.clone(),
            cell: Rect { x: even(i as u32 * width / nb), y: 0, w: even(width / nb), h: even(big_h) },
            z: 1,
            featured: true,
        })
        .collect();
    for (i, id) in small_ids.into_iter().enumerate() {
        let (row, col) = (i as u32 / 7, i as u32 % 7);
        let in_row = (n_small as u32 - row * 7).min(7);
        let cw = even(width / strip_cols);
        // Centre a short last row.
        let x0 = even((width - cw * in_row) / 2);
        out.push(Placement {
            participant: id.to_string(),
            cell: Rect { x: x0 + col * cw, y: even(big_h + row * small_h), w: cw, h: even(small_h) },
            z: 1,
            featured: false,
        });
    }
    out
}

fn place_custom(
    tiles: &[CustomTile],
    sources: &[TileSource],
    recent: &[&TileSource],
    width: u32,
    height: u32,
    cap: usize,
) -> Vec<Placement> {
    let named: Vec<&str> = tiles.iter().filter_map(|t| t.participant.as_deref()).collect();
    // Unnamed tiles take participants not named anywhere: recent speakers first when there are
    // more participants than tiles, shown in join order.
    let free_tiles = tiles.iter().filter(|t| t.participant.is_none()).count();
    let mut free: Vec<&str> =
        recent.iter().map(|s| s.id.as_str()).filter(|id| !named.contains(id)).take(free_tiles).collect();
    free.sort_by_key(|id| sources.iter().position(|s| s.id == *id));
    let mut free = free.into_iter();
    let mut out = vec![];
    for t in tiles {
        let id = match &t.participant {
            Some(p) if sources.iter().any(|s| &s.id == p) => Some(p.as_str()),
            Some(_) => None,
            None => free.next(),
        };
        let Some(id) = id else { continue };
        if out.len() >= cap {
            break;
        }
        let x = even((t.x * width as f64) as u32);
        let y = even((t.y * height as f64) as u32);
        let w = even((t.w * width as f64) as u32).min(width - x).max(2);
        let h = even((t.h * height as f64) as u32).min(height - y).max(2);
        out.push(Placement { participant: id.to_string(), cell: Rect { x, y, w, h }, z: t.z + 1, featured: false });
    }
    out
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn srcs(n: usize) -> Vec<TileSource> {
        (0..n).map(|i| TileSource { id: format!("p{i}"), screen: false, last_spoke: None }).collect()
    }

    fn at<'a>(p: &'a [Placement], id: &str) -> &'a Placement {
        p.iter().find(|x| x.participant == id).unwrap()
    }

    #[test]
    fn wire_names_round_trip() {
        for j in [
            r#"{"layout":"grid"}"#,
            r#"{"layout":"speaker"}"#,
            r#"{"layout":"1+7"}"#,
            r#"{"layout":"2+21"}"#,
            r#"{"layout":"1+N"}"#,
            r#"{"layout":"presentation"}"#,
            r#"{"layout":"pinned","participant":"p1"}"#,
        ] {
            let l: Layout = serde_json::from_str(j).unwrap();
            assert_eq!(serde_json::to_string(&l).unwrap(), j);
        }
        for bad in [
            r#"{"layout":"pinned"}"#,
            r#"{"layout":"0+3"}"#,
            r#"{"layout":"mosaic"}"#,
            r#"{"layout":"1++7"}"#,
            r#"{"layout":"grid","participant":"p1"}"#,
            r#"{"layout":"custom","tiles":[{"x":0.5,"y":0,"w":0.6,"h":1}]}"#,
        ] {
            assert!(serde_json::from_str::<Layout>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grid_matches_the_grid_function() {
        let p = place(&Layout::Grid, &srcs(5), None, 1280, 720, 16);
        let cells: Vec<Rect> = p.iter().map(|x| x.cell).collect();
        assert_eq!(cells, grid(5, 1280, 720));
    }

    #[test]
    fn speaker_is_large_and_the_rest_are_a_strip() {
        let p = place(&Layout::Speaker, &srcs(4), Some("p2"), 1280, 720, 16);
        let big = at(&p, "p2");
        assert!(big.featured && big.cell.w == 1280 && big.cell.y == 0);
        let small: Vec<&Placement> = p.iter().filter(|x| !x.featured).collect();
        assert_eq!(small.len(), 3);
        assert!(small.iter().all(|s| s.cell.y >= big.cell.h && s.cell.y + s.cell.h <= 720));
        assert_eq!(small.iter().map(|s| s.participant.as_str()).collect::<Vec<_>>(), vec!["p0", "p1", "p3"]);
    }

    #[test]
    fn featured_and_caps() {
        let mut s = srcs(30);
        s[20].last_spoke = Some(5);
        s[25].last_spoke = Some(9);
        let p = place(&Layout::Featured { big: 2, small: Some(7) }, &s, Some("p25"), 1280, 720, 16);
        assert_eq!(p.len(), 9);
        assert!(at(&p, "p25").featured && at(&p, "p20").featured);
        // Cap of visible tiles: the recent speakers stay visible.
        let g = place(&Layout::Grid, &s, None, 1280, 720, 16);
        assert_eq!(g.len(), 16);
        assert!(g.iter().any(|x| x.participant == "p25") && g.iter().any(|x| x.participant == "p20"));
    }

    #[test]
    fn presentation_shows_the_screen_share() {
        let mut s = srcs(3);
        s[1].screen = true;
        let p = place(&Layout::Presentation, &s, Some("p0"), 1280, 720, 16);
        assert!(at(&p, "p1").featured);
        let p = place(&Layout::Pinned { participant: "p2".into() }, &s, Some("p0"), 1280, 720, 16);
        assert!(at(&p, "p2").featured);
    }

    #[test]
    fn custom_tiles_in_normalized_coordinates() {
        let tiles = vec![
            CustomTile { x: 0.0, y: 0.0, w: 1.0, h: 1.0, z: 0, participant: Some("p1".into()) },
            CustomTile { x: 0.75, y: 0.75, w: 0.25, h: 0.25, z: 2, participant: None },
        ];
        let p = place(&Layout::Custom { tiles }, &srcs(3), None, 1280, 720, 16);
        assert_eq!(p.len(), 2);
        assert_eq!(at(&p, "p1").cell, Rect { x: 0, y: 0, w: 1280, h: 720 });
        assert_eq!(at(&p, "p0").cell, Rect { x: 960, y: 540, w: 320, h: 180 });
        assert!(at(&p, "p0").z > at(&p, "p1").z);
    }
}
