//! Room settings given by `PUT /v1/rooms/{room}`, and their checks.

use serde::{Deserialize, Serialize};

use crate::media::layout::{Layout, LayoutSpec};
use crate::media::tiers::OutputFormat;

/// Room settings, given by `PUT /v1/rooms/{room}`; unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomOptions {
    /// Most participants at once (viewers included); further joins get 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<usize>,
    /// Composite width, pixels (even, 64..=3840).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Composite height, pixels (even, 64..=2160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Composite frame rate, 1..=60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// Composite bitrate, kbit/s (100..=20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps: Option<u32>,
    /// Layout name (`grid`, `speaker`, `1+7`, `presentation`, ...); `pinned` and `custom` are set
    /// with `PUT /v1/rooms/{room}/layout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Most tiles shown at once (default 16); past it the most recent speakers are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visible: Option<usize>,
    /// Record automatically from the first join, in this format (`mp4`, `webm`, `mkv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_record: Option<crate::outputs::recording::Format>,
}

impl RoomOptions {
    /// Checks the caps.
    ///
    /// # Errors
    /// The one-line reason for a `max_visible` outside 1..=100 or a `max_participants` of 0.
    pub fn check(&self) -> Result<(), String> {
        if self.max_visible == Some(0) || self.max_visible.is_some_and(|v| v > 100) {
            return Err("max_visible must be 1..=100".into());
        }
        if self.max_participants == Some(0) {
            return Err("max_participants must be at least 1".into());
        }
        Ok(())
    }

    /// The output format these options give over `default`.
    ///
    /// # Errors
    /// The one-line reason for odd or out-of-range sizes, rates or bitrates.
    pub fn format(&self, default: OutputFormat) -> Result<OutputFormat, String> {
        let f = OutputFormat {
            width: self.width.unwrap_or(default.width),
            height: self.height.unwrap_or(default.height),
            fps: self.fps.unwrap_or(default.fps),
            kbps: self.kbps.unwrap_or(default.kbps),
        };
        let even = f.width.is_multiple_of(2) && f.height.is_multiple_of(2);
        if !(64..=3840).contains(&f.width) || !(64..=2160).contains(&f.height) || !even {
            return Err(format!("output {}x{}: need even sizes within 64x64..3840x2160", f.width, f.height));
        }
        if !(1..=60).contains(&f.fps) || !(100..=20000).contains(&f.kbps) {
            return Err("fps must be 1..=60 and kbps 100..=20000".into());
        }
        Ok(f)
    }

    /// Whether these options name a format different from the running `current` one (only the
    /// fields given are compared).
    pub fn changes_format(&self, current: OutputFormat) -> bool {
        self.width.is_some_and(|v| v != current.width)
            || self.height.is_some_and(|v| v != current.height)
            || self.fps.is_some_and(|v| v != current.fps)
            || self.kbps.is_some_and(|v| v != current.kbps)
    }

    /// The layout named by `layout`, if any.
    ///
    /// # Errors
    /// The one-line reason for an unknown or malformed layout name.
    pub fn parsed_layout(&self) -> Result<Option<Layout>, String> {
        self.layout
            .as_ref()
            .map(|l| Layout::try_from(LayoutSpec { layout: l.clone(), participant: None, tiles: None }))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: OutputFormat = OutputFormat { width: 1280, height: 720, fps: 30, kbps: 1500 };

    #[test]
    fn formats_are_checked_and_changes_seen_field_by_field() {
        let o = RoomOptions { width: Some(1920), height: Some(1080), ..Default::default() };
        assert_eq!(o.format(F).unwrap(), OutputFormat { width: 1920, height: 1080, ..F });
        assert!(o.changes_format(F));
        assert!(!RoomOptions { kbps: Some(1500), ..Default::default() }.changes_format(F));
        assert!(RoomOptions { width: Some(1281), ..Default::default() }.format(F).is_err());
        assert!(RoomOptions { fps: Some(61), ..Default::default() }.format(F).is_err());
        assert!(RoomOptions { max_visible: Some(0), ..Default::default() }.check().is_err());
        assert!(RoomOptions { layout: Some("nope".into()), ..Default::default() }.parsed_layout().is_err());
        assert_eq!(
            RoomOptions { layout: Some("speaker".into()), ..Default::default() }.parsed_layout().unwrap(),
            Some(Layout::Speaker)
        );
    }
}
