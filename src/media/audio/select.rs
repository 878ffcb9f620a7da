//! Which publishers the mixer decodes: the K loudest talkers by their RFC 6464 level, with
//! hysteresis. Pure, unit-tested.
//!
//! Each publisher that sends the RFC 6464 audio-level extension gets a [`Talker`]. Every 20 ms
//! tick it is fed that tick's level (dBov, −127..=0; −127 is silence) and keeps an envelope: the
//! maximum over the last [`PEAK_WINDOW_TICKS`], followed with a fast attack and a slower release,
//! so the pauses between words do not make it drop out. [`select`] then gives at most `k` slots:
//! - a free slot goes at once to the loudest unselected talker whose envelope is above
//!   [`FLOOR_DBOV`];
//! - a selected talker keeps its slot until it has been below the floor for [`HANGOVER_TICKS`],
//!   or another talker is speaking while it is below the floor, or another talker has been louder
//!   by [`SWITCH_MARGIN_DB`] for [`SWITCH_TICKS`] in a row.
//!
//! A talker that loses its slot is decoded one last time ([`Action::Last`], so the mixer can fade
//! it out) and still occupies the slot for that tick; its successor starts on the next tick. So the
//! decodes of RFC 6464 senders never exceed `k` in a tick (unless `k` was just lowered).

/// How many talkers are decoded and mixed by default.
pub const DEFAULT_MIX_TALKERS: usize = 3;
/// Envelope level at or below which a publisher counts as silent, dBov.
pub const FLOOR_DBOV: f32 = -55.0;
/// The RFC 6464 level of digital silence, dBov.
pub const SILENCE_DBOV: f32 = -127.0;
/// How much louder a challenger's envelope must be than the quietest selected talker's, dB.
pub const SWITCH_MARGIN_DB: f32 = 6.0;
/// How long a challenger must stay louder by the margin: 200 ms of 20 ms ticks.
pub const SWITCH_TICKS: u32 = 10;
/// How long a selected talker may stay silent before giving up its slot when nobody wants it:
/// 500 ms of 20 ms ticks.
pub const HANGOVER_TICKS: u32 = 25;
/// The envelope follows the maximum level over this many ticks (240 ms).
pub const PEAK_WINDOW_TICKS: usize = 12;
/// Envelope smoothing per tick when rising (≈ 30 ms time constant).
const ATTACK: f32 = 0.5;
/// Envelope smoothing per tick when falling (≈ 90 ms time constant, after the peak window).
const RELEASE: f32 = 0.2;

/// What the mixer does with a publisher's frame this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Not selected: discard the frame, contribute silence.
    #[default]
    Skip,
    /// Selected: decode and mix.
    Decode,
    /// Just lost its slot: decode and mix one last time, faded out.
    Last,
}

/// The selection state of one publisher that sends the RFC 6464 level.
#[derive(Debug, Clone)]
pub struct Talker {
    window: [f32; PEAK_WINDOW_TICKS],
    pos: usize,
    envelope: f32,
    selected: bool,
    quiet_ticks: u32,
    ahead_ticks: u32,
    action: Action,
}

impl Default for Talker {
    fn default() -> Self {
        Self {
            window: [SILENCE_DBOV; PEAK_WINDOW_TICKS],
            pos: 0,
            envelope: SILENCE_DBOV,
            selected: false,
            quiet_ticks: 0,
            ahead_ticks: 0,
            action: Action::Skip,
        }
    }
}

impl Talker {
    /// Feeds this tick's level, dBov (−127..=0, clamped); call once per tick before [`select`].
    pub fn feed(&mut self, level_dbov: f32) {
        self.window[self.pos] = level_dbov.clamp(SILENCE_DBOV, 0.0);
        self.pos = (self.pos + 1) % PEAK_WINDOW_TICKS;
        let peak = self.window.iter().copied().fold(SILENCE_DBOV, f32::max);
        let a = if peak > self.envelope { ATTACK } else { RELEASE };
        self.envelope += a * (peak - self.envelope);
    }

    /// The smoothed level, dBov.
    pub fn envelope(&self) -> f32 {
        self.envelope
    }

    /// Whether it holds a slot (it is decoded next tick too).
    pub fn is_selected(&self) -> bool {
        self.selected
    }

    /// What to do with this tick's frame, as decided by the last [`select`].
    pub fn action(&self) -> Action {
        self.action
    }

    /// Drops the slot at once, without a last frame (a muted publisher), and forgets the level.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn speaking(&self) -> bool {
        self.envelope > FLOOR_DBOV
    }
}

/// Decides this tick's [`Action`] of every candidate (the unmuted RFC 6464 senders, already fed
/// this tick's level), giving at most `k` slots (`k` < 1 counts as 1). Ties go to the earlier
/// candidate in `cands`.
pub fn select(cands: &mut [&mut Talker], k: usize) {
    let k = k.max(1);
    // 1. Selected talkers: count silence; give up the slot after the hangover.
    let mut used = 0;
    for t in cands.iter_mut() {
        t.action = Action::Skip;
        if !t.selected {
            continue;
        }
        used += 1;
        t.quiet_ticks = if t.speaking() { 0 } else { t.quiet_ticks.saturating_add(1) };
        if t.quiet_ticks >= HANGOVER_TICKS {
            leave(t);
        } else {
            t.action = Action::Decode;
        }
    }
    // k was lowered: the quietest give way.
    let mut keeping: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].action == Action::Decode).collect();
    keeping.sort_by(|&a, &b| cands[b].envelope.total_cmp(&cands[a].envelope));
    for &i in keeping.iter().skip(k) {
        leave(cands[i]);
    }
    keeping.truncate(k);

    // 2. Challengers, loudest first: free slots, then displacement of the quietest incumbent.
    let mut challengers: Vec<usize> =
        (0..cands.len()).filter(|&i| !cands[i].selected && cands[i].action == Action::Skip).collect();
    for &i in &challengers {
        if !cands[i].speaking() {
            cands[i].ahead_ticks = 0;
        }
    }
    challengers.retain(|&i| cands[i].speaking());
    challengers.sort_by(|&a, &b| cands[b].envelope.total_cmp(&cands[a].envelope));
    // `keeping` is sorted loudest first, so its last entry is the quietest incumbent.
    for i in challengers {
        if used < k {
            used += 1;
            let t = &mut *cands[i];
            t.selected = true;
            t.action = Action::Decode;
            t.quiet_ticks = 0;
            t.ahead_ticks = 0;
            continue;
        }
        let Some(&j) = keeping.last() else {
            cands[i].ahead_ticks = 0;
            continue;
        };
        let (challenger, incumbent) = (cands[i].envelope, &cands[j]);
        if !incumbent.speaking() {
            // Someone is talking while this slot holds silence: hand it over now (next tick).
            leave(cands[j]);
            keeping.pop();
            cands[i].ahead_ticks = 0;
        } else if challenger > incumbent.envelope + SWITCH_MARGIN_DB {
            cands[i].ahead_ticks += 1;
            if cands[i].ahead_ticks >= SWITCH_TICKS {
                leave(cands[j]);
                keeping.pop();
                cands[i].ahead_ticks = 0;
            }
        } else {
            cands[i].ahead_ticks = 0;
        }
    }
}

fn leave(t: &mut Talker) {
    t.selected = false;
    t.action = Action::Last;
    t.quiet_ticks = 0;
    t.ahead_ticks = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `levels` (dBov, one per talker) for `ticks` ticks; returns the selected indices.
    fn run(ts: &mut [Talker], k: usize, ticks: u32, levels: &[f32]) -> Vec<usize> {
        for _ in 0..ticks {
            for (t, l) in ts.iter_mut().zip(levels) {
                t.feed(*l);
            }
            let mut cands: Vec<&mut Talker> = ts.iter_mut().collect();
            select(&mut cands, k);
            let decoding = ts.iter().filter(|t| t.action() != Action::Skip).count();
            assert!(decoding <= k, "{decoding} decodes > k = {k}");
        }
        (0..ts.len()).filter(|&i| ts[i].is_selected()).collect()
    }

    #[test]
    fn the_loudest_k_are_selected_and_silence_is_not() {
        let mut ts = vec![Talker::default(); 6];
        let levels = [-20.0, -127.0, -30.0, -127.0, -25.0, -127.0];
        assert_eq!(run(&mut ts, 3, 3, &levels), vec![0, 2, 4]);
        // Two talkers, three slots: the third stays free.
        let levels = [-20.0, -127.0, -127.0, -127.0, -25.0, -127.0];
        assert_eq!(run(&mut ts, 3, 60, &levels), vec![0, 4]);
    }

    #[test]
    fn a_slightly_louder_challenger_does_not_displace() {
        let mut ts = vec![Talker::default(); 4];
        run(&mut ts, 3, 20, &[-20.0, -20.0, -20.0, -127.0]);
        // 5 dB louder: never enough.
        assert_eq!(run(&mut ts, 3, 200, &[-20.0, -20.0, -20.0, -15.0]), vec![0, 1, 2]);
    }

    #[test]
    fn a_much_louder_challenger_displaces_the_quietest_after_the_hold() {
        let mut ts = vec![Talker::default(); 4];
        run(&mut ts, 3, 20, &[-20.0, -30.0, -25.0, -127.0]);
        assert_eq!(
            run(&mut ts, 3, SWITCH_TICKS - 1, &[-20.0, -30.0, -25.0, -5.0]),
            vec![0, 1, 2],
            "not before the hold"
        );
        assert_eq!(run(&mut ts, 3, 10, &[-20.0, -30.0, -25.0, -5.0]), vec![0, 2, 3]);
        // Flapping back needs the margin too.
        assert_eq!(run(&mut ts, 3, 100, &[-20.0, -28.0, -25.0, -5.0]), vec![0, 2, 3]);
    }

    #[test]
    fn a_silent_talker_hands_over_to_a_new_one_at_once_and_is_faded() {
        let mut ts = vec![Talker::default(); 2];
        run(&mut ts, 1, 20, &[-20.0, -127.0]);
        // A stops; within the peak window A keeps the slot, then B (quieter) takes it.
        let sel = run(&mut ts, 1, 5, &[-127.0, -40.0]);
        assert_eq!(sel, vec![0], "pauses between words are bridged");
        let mut last_seen = false;
        for _ in 0..20 {
            run(&mut ts, 1, 1, &[-127.0, -40.0]);
            last_seen |= ts[0].action() == Action::Last;
        }
        assert!(last_seen, "A's last frame is marked for a fade-out");
        assert_eq!(run(&mut ts, 1, 1, &[-127.0, -40.0]), vec![1], "well before the hangover");
    }

    #[test]
    fn silence_frees_the_slot_after_the_hangover() {
        let mut ts = vec![Talker::default(); 1];
        run(&mut ts, 3, 20, &[-20.0]);
        assert_eq!(run(&mut ts, 3, 20, &[-127.0]), vec![0]);
        assert_eq!(run(&mut ts, 3, HANGOVER_TICKS, &[-127.0]), Vec::<usize>::new());
    }

    #[test]
    fn lowering_k_releases_the_quietest() {
        let mut ts = vec![Talker::default(); 3];
        run(&mut ts, 3, 20, &[-20.0, -30.0, -25.0]);
        for t in ts.iter_mut() {
            t.feed(-20.0);
        }
        let mut cands: Vec<&mut Talker> = ts.iter_mut().collect();
        select(&mut cands, 1);
        assert_eq!(ts.iter().map(Talker::is_selected).collect::<Vec<_>>(), vec![true, false, false]);
    }
}
