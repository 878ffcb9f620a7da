//! Active speaker detection with hysteresis, from per-participant audio levels every 20 ms tick.
//! Pure, unit-tested.
//!
//! Each participant's level (dBFS; from the RFC 6464 audio-level header extension when the
//! publisher sends it, else from the decoded frame) is smoothed with a fast attack and a slow
//! release. A participant is *talking* while the smoothed level is above [`TALK_DBFS`]. The
//! active speaker changes only when another talker has been louder by [`SWITCH_MARGIN_DB`] for
//! [`SWITCH_TICKS`], or when the current speaker has been quiet for [`QUIET_TICKS`]; so the big tile
//! does not flicker between people who talk over each other.

use std::collections::HashMap;

/// Smoothed level above which a participant counts as talking, dBFS.
pub const TALK_DBFS: f32 = -45.0;
/// How much louder a challenger must be, dB.
pub const SWITCH_MARGIN_DB: f32 = 6.0;
/// How long a challenger must stay louder: 500 ms of 20 ms ticks.
pub const SWITCH_TICKS: u32 = 25;
/// How long the speaker must be quiet before anyone talking takes over: 1 s.
pub const QUIET_TICKS: u32 = 50;
/// How long the first speaker must be the loudest before being named: 100 ms.
pub const FIRST_TICKS: u32 = 5;

/// A change worth telling the room about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerUpdate {
    /// The active speaker (kept while the room is silent).
    pub speaker: Option<String>,
    /// Who is talking now, sorted.
    pub talking: Vec<String>,
}

#[derive(Debug, Default)]
struct Track {
    smoothed: f32,
    quiet_ticks: u32,
}

/// The detector of one room.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    levels: HashMap<String, Track>,
    speaker: Option<String>,
    challenger: Option<(String, u32)>,
    talking: Vec<String>,
}

impl SpeakerDetector {
    /// Forgets a participant who left.
    pub fn remove(&mut self, id: &str) {
        self.levels.remove(id);
        if self.speaker.as_deref() == Some(id) {
            self.speaker = None;
        }
        if self.challenger.as_ref().is_some_and(|(c, _)| c == id) {
            self.challenger = None;
        }
        self.talking.retain(|t| t != id);
    }

    /// The active speaker.
    pub fn speaker(&self) -> Option<&str> {
        self.speaker.as_deref()
    }

    /// Feeds one tick of levels (dBFS per participant); returns an update when the speaker or the
    /// set of talkers changed.
    pub fn tick(&mut self, levels: &[(&str, f32)]) -> Option<SpeakerUpdate> {
        for (id, level) in levels {
            let t = self.levels.entry(id.to_string()).or_insert(Track { smoothed: -100.0, quiet_ticks: 0 });
            let a = if *level > t.smoothed { 0.4 } else { 0.06 };
            t.smoothed += a * (level.max(-100.0) - t.smoothed);
            if t.smoothed > TALK_DBFS { t.quiet_ticks = 0 } else { t.quiet_ticks = t.quiet_ticks.saturating_add(1) }
        }
        let mut talking: Vec<String> =
            self.levels.iter().filter(|(_, t)| t.smoothed > TALK_DBFS).map(|(id, _)| id.clone()).collect();
        talking.sort();
        let loudest = self
            .levels
            .iter()
            .filter(|(_, t)| t.smoothed > TALK_DBFS)
            .max_by(|a, b| a.1.smoothed.total_cmp(&b.1.smoothed))
            .map(|(id, t)| (id.clone(), t.smoothed));
        let before = self.speaker.clone();
        match (&self.speaker, loudest) {
            (_, None) => self.challenger = None,
            (Some(cur), Some((id, _))) if *cur == id => self.challenger = None,
            (cur, Some((id, level))) => {
                let cur_track = cur.as_ref().and_then(|c| self.levels.get(c));
                let (needed, ahead) = match cur_track {
                    None => (FIRST_TICKS, true),
                    Some(c) if c.quiet_ticks >= QUIET_TICKS => (1, true),
                    Some(c) => (SWITCH_TICKS, level > c.smoothed + SWITCH_MARGIN_DB),
                };
                if !ahead {
                    self.challenger = None;
                } else {
                    let n = match &self.challenger {
                        Some((c, n)) if *c == id => n + 1,
                        _ => 1,
                    };
                    if n >= needed {
                        self.speaker = Some(id);
                        self.challenger = None;
                    } else {
                        self.challenger = Some((id, n));
                    }
                }
            }
        }
        let changed = before != self.speaker || talking != self.talking;
        self.talking = talking;
        changed.then(|| SpeakerUpdate { speaker: self.speaker.clone(), talking: self.talking.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut SpeakerDetector, ticks: u32, levels: &[(&str, f32)]) -> Option<String> {
        for _ in 0..ticks {
            d.tick(levels);
        }
        d.speaker().map(str::to_string)
    }

    #[test]
    fn first_talker_becomes_speaker_and_silence_keeps_them() {
        let mut d = SpeakerDetector::default();
        assert_eq!(run(&mut d, 3, &[("a", -20.0), ("b", -90.0)]), None, "not before 100 ms");
        assert_eq!(run(&mut d, 10, &[("a", -20.0), ("b", -90.0)]), Some("a".into()));
        assert_eq!(run(&mut d, 200, &[("a", -90.0), ("b", -90.0)]), Some("a".into()));
    }

    #[test]
    fn a_louder_talker_takes_over_only_after_half_a_second() {
        let mut d = SpeakerDetector::default();
        run(&mut d, 50, &[("a", -30.0), ("b", -90.0)]);
        // b is louder by 10 dB: not at once...
        assert_eq!(run(&mut d, 10, &[("a", -30.0), ("b", -20.0)]), Some("a".into()));
        // ...but within a second.
        assert_eq!(run(&mut d, 40, &[("a", -30.0), ("b", -20.0)]), Some("b".into()));
    }

    #[test]
    fn similar_levels_do_not_flicker() {
        let mut d = SpeakerDetector::default();
        run(&mut d, 50, &[("a", -25.0), ("b", -90.0)]);
        for i in 0..500 {
            let (la, lb) = if i % 10 < 5 { (-25.0, -22.0) } else { (-22.0, -25.0) };
            d.tick(&[("a", la), ("b", lb)]);
            assert_eq!(d.speaker(), Some("a"));
        }
    }

    #[test]
    fn a_quiet_speaker_hands_over() {
        let mut d = SpeakerDetector::default();
        run(&mut d, 50, &[("a", -20.0), ("b", -90.0)]);
        // a stops; b talks at a lower level than a had.
        assert_eq!(run(&mut d, 120, &[("a", -90.0), ("b", -35.0)]), Some("b".into()));
        let u = d.tick(&[("a", -90.0), ("b", -35.0)]);
        assert!(u.is_none(), "no update without a change");
        d.remove("b");
        assert_eq!(d.speaker(), None);
    }
}
