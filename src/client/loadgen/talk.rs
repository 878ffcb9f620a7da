//! Pre-encoded talk-turn audio: a few seconds of a speech-like signal and a silence frame,
//! Opus-encoded once per process, sent by every talk-turn publisher from one shared 20 ms ticker
//! thread (no encoder and no timer per peer), with the RFC 6464 audio-level header extension.
//!
//! A publisher's [`TalkTurn`] says when it talks: publishers take turns so that `talkers` of the
//! `slots` talk at any time and the set rotates every `turn_ms`; the others send the silence
//! packet (level 127, no voice activity).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

/// Samples per 20 ms Opus packet at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Length of the pre-encoded speech clip, seconds (looped).
pub const CLIP_SECONDS: usize = 4;
/// RMS level of the speech clip, dBFS.
pub const SPEECH_DBFS: f64 = -20.0;
/// Opus payload type the load generator offers (see its media engine).
const OPUS_PT: u8 = 111;

/// When a talk-turn publisher talks: it talks in epoch `e` (`e` = seconds since the process's
/// ticker started / `turn_ms`) when `(slot + e) mod slots < talkers`, so exactly `talkers` of
/// `slots` publishers (slots `0..slots`) talk at any time and the set rotates each epoch.
/// `slots = talkers = 1` talks all the time; `talkers = 0` never talks (sends silence packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkTurn {
    /// This publisher's slot, `0..slots`.
    pub slot: usize,
    /// Publishers taking turns.
    pub slots: usize,
    /// Publishers talking at any time.
    pub talkers: usize,
    /// Length of one turn, ms (default 3000).
    pub turn_ms: u64,
}

impl TalkTurn {
    /// Slot `slot` of `slots`, with `talkers` talking at a time, 3 s turns.
    pub fn new(slot: usize, slots: usize, talkers: usize) -> Self {
        Self { slot, slots, talkers, turn_ms: 3000 }
    }

    /// A publisher that talks all the time.
    pub fn always() -> Self {
        Self::new(0, 1, 1)
    }

    /// Whether it talks at `elapsed` since the ticker started.
    pub fn talking(&self, elapsed: Duration) -> bool {
        if self.slots == 0 {
            return false;
        }
        let epoch = elapsed.as_millis() as u64 / self.turn_ms.max(20);
        (self.slot as u64 + epoch) % (self.slots as u64) < self.talkers as u64
    }
}

/// The pre-encoded audio: speech packets (each with its RFC 6464 level, 0..=127 in −dBov) and one
/// silence packet (an ordinary Opus frame of digital silence, not DTX).
struct Clip {
    speech: Vec<(Bytes, u8)>,
    silence: Bytes,
}

/// A speech-like signal: a voiced buzz (gliding 110–170 Hz fundamental, harmonics falling 6 dB per
/// octave) with syllable-like amplitude modulation at 4 Hz over a floor, a short pause after every
/// 6 syllables, scaled to [`SPEECH_DBFS`] RMS. 48 kHz mono, `seconds` long.
fn speech_signal(seconds: usize) -> Vec<i16> {
    use std::f64::consts::PI;
    let n = 48000 * seconds;
    let mut phase = 0.0f64;
    let raw: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 / 48000.0;
            let f0 = 140.0 + 30.0 * (2.0 * PI * 0.7 * t).sin();
            phase += 2.0 * PI * f0 / 48000.0;
            let voiced: f64 = (1..=12).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            // 4 syllables a second; a 250 ms breath after every 6 syllables (1.75 s cycle).
            let cycle = t % 1.75;
            let env = if cycle < 1.5 { 0.15 + 0.85 * (2.0 * PI * 2.0 * cycle).sin().abs() } else { 0.02 };
            voiced * env
        })
        .collect();
    let rms = (raw.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt().max(1e-9);
    let gain = 32767.0 * 10f64.powf(SPEECH_DBFS / 20.0) / rms;
    raw.iter().map(|x| (x * gain).clamp(-32767.0, 32767.0) as i16).collect()
}

/// RFC 6464 level of a frame: its RMS in −dBov (0 loudest, 127 silence).
pub fn level_dbov(frame: &[i16]) -> u8 {
    let rms = (frame.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / frame.len().max(1) as f64).sqrt();
    if rms < 1.0 {
        return 127;
    }
    (-20.0 * (rms / 32767.0).log10()).round().clamp(0.0, 127.0) as u8
}

fn encode_clip() -> Result<Clip, opus::Error> {
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(32000))?;
    let mut speech = vec![];
    for frame in speech_signal(CLIP_SECONDS).chunks_exact(FRAME_SAMPLES) {
        speech.push((Bytes::from(enc.encode_vec(frame, 1500)?), level_dbov(frame)));
    }
    // The steady-state packet of digital silence (the first few carry the encoder's start-up).
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(32000))?;
    let zeros = [0i16; FRAME_SAMPLES];
    let mut silence = vec![];
    for _ in 0..10 {
        silence = enc.encode_vec(&zeros, 1500)?;
    }
    Ok(Clip { speech, silence: Bytes::from(silence) })
}

/// The clip, encoded at first use (about 70 ms of one core); `None` if Opus failed.
fn clip() -> Option<&'static Clip> {
    static CLIP: OnceLock<Option<Clip>> = OnceLock::new();
    CLIP.get_or_init(|| encode_clip().map_err(|e| tracing::error!("talk clip: opus: {e}")).ok()).as_ref()
}

/// One publisher's pre-encoded audio stream, written by the shared ticker while it is alive and
/// not stopped.
pub(crate) struct TalkStream {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    /// The negotiated id of the audio-level extension; `None` sends none.
    level_ext: Option<u8>,
    turn: TalkTurn,
    stopped: AtomicBool,
    /// A write failed (logged once).
    write_failed: AtomicBool,
    state: Mutex<StreamState>,
}

struct StreamState {
    seq: u16,
    ts_base: u32,
    /// Ticker tick of the first packet.
    first_tick: Option<u64>,
    /// Offset into the speech clip, packets (so talkers do not say the same thing in unison).
    clip_offset: usize,
}

impl TalkStream {
    /// Starts sending on `track` (`ssrc`, Opus payload type 111) with the audio-level extension
    /// under id `level_ext`. The stream stops when the returned `Arc` is dropped or
    /// [`TalkStream::stop`] is called.
    pub(crate) fn start(
        track: Arc<TrackLocalStaticRTP>,
        ssrc: u32,
        level_ext: Option<u8>,
        turn: TalkTurn,
        seed: u32,
    ) -> Arc<TalkStream> {
        let s = Arc::new(TalkStream {
            track,
            ssrc,
            level_ext,
            turn,
            stopped: AtomicBool::new(false),
            write_failed: AtomicBool::new(false),
            state: Mutex::new(StreamState {
                seq: seed as u16,
                ts_base: seed.rotate_left(7),
                first_tick: None,
                clip_offset: (turn.slot * 37 + seed as usize) % (CLIP_SECONDS * 50),
            }),
        });
        ticker().streams.lock().unwrap().push(Arc::downgrade(&s));
        s
    }

    /// Stops sending.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The packet for ticker tick `tick` (20 ms each since `elapsed` = tick × 20 ms).
    fn packet(&self, clip: &Clip, tick: u64, elapsed: Duration) -> rtc::rtp::Packet {
        let mut st = self.state.lock().unwrap();
        let first = *st.first_tick.get_or_insert(tick);
        let n = tick - first;
        let (payload, level, voice) = if self.turn.talking(elapsed) {
            let (p, l) = &clip.speech[(st.clip_offset + tick as usize) % clip.speech.len()];
            (p.clone(), *l, *l < 127)
        } else {
            (clip.silence.clone(), 127, false)
        };
        let mut pkt = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: n == 0,
                payload_type: OPUS_PT,
                sequence_number: st.seq,
                // Timestamps follow the wall clock even when a tick was late or skipped.
                timestamp: st.ts_base.wrapping_add((n * FRAME_SAMPLES as u64) as u32),
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        st.seq = st.seq.wrapping_add(1);
        if let Some(id) = self.level_ext {
            // RFC 6464 one-byte form: V bit, then the level in −dBov.
            let _ = pkt.header.set_extension(id, Bytes::copy_from_slice(&[(u8::from(voice) << 7) | level.min(127)]));
        }
        pkt
    }
}

/// The process's one 20 ms ticker: a thread with its own small runtime, so it outlives any
/// caller's runtime (tests run one per test).
struct Ticker {
    streams: Mutex<Vec<Weak<TalkStream>>>,
}

fn ticker() -> &'static Ticker {
    static TICKER: OnceLock<Ticker> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let t: &'static Ticker = TICKER.get_or_init(|| Ticker { streams: Mutex::new(vec![]) });
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("talk-ticker".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("talk ticker runtime: {e}"),
            };
            rt.block_on(run_ticker(t));
        });
        if let Err(e) = spawned {
            tracing::error!("talk ticker thread: {e}");
        }
    });
    t
}

/// Every 20 ms, one packet to every live stream. A late tick is skipped, not bursted: the
/// stream's RTP timestamps still follow the wall clock, as a real sender's would.
async fn run_ticker(t: &'static Ticker) {
    let Some(clip) = clip() else { return };
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let elapsed = start.elapsed();
        let tick = elapsed.as_millis() as u64 / 20;
        let live: Vec<Arc<TalkStream>> = {
            let mut streams = t.streams.lock().unwrap();
            streams.retain(|w| w.upgrade().is_some_and(|s| !s.stopped.load(Ordering::Relaxed)));
            streams.iter().filter_map(Weak::upgrade).collect()
        };
        for s in live {
            let pkt = s.packet(clip, tick, elapsed);
            if let Err(e) = s.track.write_rtp(pkt).await
                && !s.stopped.load(Ordering::Relaxed)
                && !s.write_failed.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(ssrc = s.ssrc, "talk stream: first failed write: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_rotate_with_a_fixed_number_of_talkers() {
        for epoch in 0..20u64 {
            let at = Duration::from_millis(epoch * 3000 + 10);
            let n = (0..10).filter(|&i| TalkTurn::new(i, 10, 3).talking(at)).count();
            assert_eq!(n, 3, "epoch {epoch}");
        }
        let t = TalkTurn::new(0, 10, 3);
        assert!(t.talking(Duration::ZERO));
        assert!(!t.talking(Duration::from_millis(3000 * 5)));
        assert!(TalkTurn::always().talking(Duration::from_secs(1234)));
        assert!(!TalkTurn::new(0, 10, 0).talking(Duration::ZERO));
    }

    #[test]
    fn clip_is_speech_level_and_silence_is_tiny() {
        let s = speech_signal(2);
        let rms = (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
        assert!((20.0 * (rms / 32767.0).log10() - SPEECH_DBFS).abs() < 0.5);
        let c = clip().expect("opus");
        assert_eq!(c.speech.len(), CLIP_SECONDS * 50);
        let levels: Vec<u8> = c.speech.iter().map(|(_, l)| *l).collect();
        assert!(levels.iter().any(|&l| l < 22) && levels.iter().any(|&l| l > 30), "{levels:?}");
        assert!(c.silence.len() < 64, "{}", c.silence.len());
        assert_eq!(level_dbov(&[0; 960]), 127);
    }
}
