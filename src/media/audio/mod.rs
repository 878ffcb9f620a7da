//! The room's audio: Opus in → decode → mix-minus by subtraction → Opus out, on one thread per room.
//!
//! Every 20 ms the mixer takes one frame from each publisher's jitter buffer, decodes it (mono,
//! 48 kHz, [`mix::FRAME_SAMPLES`] samples), sums everything once into `total`, and encodes:
//! - one shared encode of the full mix (`total`), for viewers and for participants whose own
//!   audio is silent (their share of the total is nothing);
//! - one encode of `total − own` for each participant who is talking and listening.
//!
//! So encodes per tick are at most talkers + 1, whatever the room size. The result goes out on a
//! broadcast channel as one [`MixFrame`] per tick; each receiver picks its personal payload if it
//! has one, else the shared one.

pub mod jitter;
pub mod mix;
pub mod speaker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use jitter::{JitterBuffer, Pop};
use mix::{FRAME_SAMPLES, Limiter};
use speaker::{SpeakerDetector, SpeakerUpdate};

/// Called from the mixer thread when the active speaker or the set of talkers changes, with the
/// tick (20 ms units) it happened at.
pub type SpeakerListener = Arc<dyn Fn(&SpeakerUpdate, u64) + Send + Sync>;

/// Own audio above this mean level (dBFS) makes a participant a talker.
const TALK_DBFS: f32 = -55.0;
/// A talker keeps its own encode this long after its last loud frame (ticks of 20 ms).
const TALK_HANGOVER_TICKS: u64 = 50;
/// Mix frames buffered for slow receivers (1 s).
const FANOUT_CAPACITY: usize = 50;

/// One 20 ms tick of the room's mixed audio, already Opus-encoded.
#[derive(Debug)]
pub struct MixFrame {
    /// Tick number since the mixer started (RTP timestamp = tick × 960).
    pub tick: u64,
    /// The full mix: for viewers and for participants who are not talking.
    pub shared: Bytes,
    /// `total − own` for each talking listener, by participant id.
    pub personal: HashMap<String, Bytes>,
}

impl MixFrame {
    /// The payload participant `id` should hear.
    pub fn for_participant(&self, id: &str) -> &Bytes {
        self.personal.get(id).unwrap_or(&self.shared)
    }
}

/// Counters of a room's mixer.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Ticks mixed.
    pub ticks: AtomicU64,
    /// Opus encodes done, in total.
    pub encodes: AtomicU64,
    /// Opus encodes in the last tick (≤ talkers + 1).
    pub encodes_last_tick: AtomicU64,
    /// Ticks that started late by more than one frame (the thread was starved).
    pub late_ticks: AtomicU64,
}

enum Cmd {
    AddSource { id: String, listens: bool },
    RemoveSource { id: String },
    Packet { id: String, seq: u16, payload: Bytes, level: Option<u8> },
    Mute { id: String, muted: bool },
}

/// Handle to a room's mixer thread; the thread stops when the last handle drops.
#[derive(Clone)]
pub struct AudioMixer {
    tx: Arc<Mutex<mpsc::Sender<Cmd>>>,
    out: broadcast::Sender<Arc<MixFrame>>,
    stats: Arc<AudioStats>,
}

/// Errors starting the mixer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// libopus refused a setting.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// The thread could not be spawned.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl AudioMixer {
    /// Starts the mixer thread for `room`, encoding at `kbps` kbit/s; `on_speaker` hears about
    /// active speaker changes.
    ///
    /// # Errors
    /// [`AudioError`] if libopus rejects the settings or the thread cannot start.
    pub fn start(room: &str, kbps: u32, on_speaker: Option<SpeakerListener>) -> Result<Self, AudioError> {
        let (tx, rx) = mpsc::channel();
        let (out, _) = broadcast::channel(FANOUT_CAPACITY);
        let stats = Arc::new(AudioStats::default());
        let mut m = Mixer::new(kbps, out.clone(), stats.clone())?;
        m.on_speaker = on_speaker;
        let room = room.to_string();
        std::thread::Builder::new().name(format!("mix-{room}")).spawn(move || m.run(rx, &room))?;
        Ok(Self { tx: Arc::new(Mutex::new(tx)), out, stats })
    }

    fn send(&self, c: Cmd) {
        let _ = self.tx.lock().unwrap().send(c);
    }

    /// Adds a publisher's audio. `listens`: it also receives the mix (so it needs mix-minus).
    pub fn add_source(&self, id: &str, listens: bool) {
        self.send(Cmd::AddSource { id: id.into(), listens });
    }

    /// Removes a publisher's audio.
    pub fn remove_source(&self, id: &str) {
        self.send(Cmd::RemoveSource { id: id.into() });
    }

    /// Server-side mute: the source is left out of every mix while `muted`.
    pub fn set_muted(&self, id: &str, muted: bool) {
        self.send(Cmd::Mute { id: id.into(), muted });
    }

    /// Queues one Opus packet (RTP payload) of publisher `id` with RTP sequence number `seq` and,
    /// when the publisher sends the RFC 6464 extension, its level (`-dBov`, 0..=127).
    pub fn push(&self, id: &str, seq: u16, payload: Bytes, level: Option<u8>) {
        self.send(Cmd::Packet { id: id.into(), seq, payload, level });
    }

    /// A receiver of the mixed frames.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MixFrame>> {
        self.out.subscribe()
    }

    /// The mixer's counters.
    pub fn stats(&self) -> Arc<AudioStats> {
        self.stats.clone()
    }
}

struct Source {
    listens: bool,
    muted: bool,
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    pcm: Vec<i16>,
    last_voice_tick: Option<u64>,
    /// Level from the last RFC 6464 extension, dBFS.
    ext_level: Option<f32>,
    /// Present while talking and listening.
    encoder: Option<(opus::Encoder, Limiter)>,
}

struct Mixer {
    kbps: u32,
    sources: HashMap<String, Source>,
    shared: opus::Encoder,
    shared_limiter: Limiter,
    total: Vec<i32>,
    out_pcm: Vec<i16>,
    out: broadcast::Sender<Arc<MixFrame>>,
    stats: Arc<AudioStats>,
    detector: SpeakerDetector,
    on_speaker: Option<SpeakerListener>,
}

fn encoder(kbps: u32) -> Result<opus::Encoder, opus::Error> {
    let mut e = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)?;
    e.set_bitrate(opus::Bitrate::Bits(kbps as i32 * 1000))?;
    e.set_inband_fec(true)?;
    Ok(e)
}

impl Mixer {
    fn new(kbps: u32, out: broadcast::Sender<Arc<MixFrame>>, stats: Arc<AudioStats>) -> Result<Self, opus::Error> {
        Ok(Self {
            kbps,
            sources: HashMap::new(),
            shared: encoder(kbps)?,
            shared_limiter: Limiter::default(),
            total: vec![0; FRAME_SAMPLES],
            out_pcm: vec![0; FRAME_SAMPLES],
            out,
            stats,
            detector: SpeakerDetector::default(),
            on_speaker: None,
        })
    }

    fn run(&mut self, rx: mpsc::Receiver<Cmd>, room: &str) {
        let frame = Duration::from_millis(20);
        let mut next = Instant::now() + frame;
        let mut tick: u64 = 0;
        loop {
            // Commands until the tick is due.
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match rx.recv_timeout(next - now) {
                    Ok(c) => self.apply(c, room),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        tracing::debug!(%room, "mixer stopped");
                        return;
                    }
                }
            }
            while let Ok(c) = rx.try_recv() {
                self.apply(c, room);
            }
            self.tick(tick);
            tick += 1;
            next += frame;
            let now = Instant::now();
            if now > next + frame {
                // Starved for more than a frame: skip ahead rather than burst.
                self.stats.late_ticks.fetch_add(1, Ordering::Relaxed);
                next = now + frame;
            }
        }
    }

    fn apply(&mut self, c: Cmd, room: &str) {
        match c {
            Cmd::AddSource { id, listens } => match opus::Decoder::new(48000, opus::Channels::Mono) {
                Ok(decoder) => {
                    self.sources.insert(
                        id,
                        Source {
                            listens,
                            muted: false,
                            jitter: JitterBuffer::default(),
                            decoder,
                            pcm: vec![0; FRAME_SAMPLES],
                            last_voice_tick: None,
                            ext_level: None,
                            encoder: None,
                        },
                    );
                }
                Err(e) => tracing::error!(%room, participant = %id, "opus decoder: {e}"),
            },
            Cmd::RemoveSource { id } => {
                self.sources.remove(&id);
                self.detector.remove(&id);
            }
            Cmd::Mute { id, muted } => {
                if let Some(s) = self.sources.get_mut(&id) {
                    s.muted = muted;
                }
            }
            Cmd::Packet { id, seq, payload, level } => {
                if let Some(s) = self.sources.get_mut(&id) {
                    s.jitter.push(seq, payload);
                    if let Some(l) = level {
                        s.ext_level = Some(-(l.min(127) as f32));
                    }
                }
            }
        }
    }

    fn tick(&mut self, tick: u64) {
        // 1. One decoded frame per source (silence when idle or muted).
        for s in self.sources.values_mut() {
            let n = match s.jitter.pop() {
                Pop::Packet(p) => s.decoder.decode(&p, &mut s.pcm, false).unwrap_or(0),
                Pop::Lost => s.decoder.decode(&[], &mut s.pcm, false).unwrap_or(0),
                Pop::Idle => 0,
            };
            if n < FRAME_SAMPLES {
                s.pcm[n..].fill(0);
            }
            if s.muted {
                s.pcm.fill(0);
            }
            if mix::level_dbfs(&s.pcm) > TALK_DBFS {
                s.last_voice_tick = Some(tick);
            }
        }
        // Active speaker: from the RFC 6464 level when sent, else the decoded frame.
        if self.on_speaker.is_some() {
            let levels: Vec<(&str, f32)> = self
                .sources
                .iter()
                .map(|(id, s)| {
                    let l = if s.muted { -100.0 } else { s.ext_level.unwrap_or_else(|| mix::level_dbfs(&s.pcm)) };
                    (id.as_str(), l)
                })
                .collect();
            if let (Some(u), Some(cb)) = (self.detector.tick(&levels), &self.on_speaker) {
                cb(&u, tick);
            }
        }
        // 2. The total, once.
        let frames: Vec<&[i16]> = self.sources.values().map(|s| s.pcm.as_slice()).collect();
        mix::sum_into(&mut self.total, &frames);

        // 3. Shared encode of the full mix.
        let mut encodes = 1u64;
        let mut buf = [0u8; 1500];
        mix::mix_minus(&self.total, None, &mut self.shared_limiter, &mut self.out_pcm);
        let shared = match self.shared.encode(&self.out_pcm, &mut buf) {
            Ok(n) => Bytes::copy_from_slice(&buf[..n]),
            Err(_) => Bytes::new(),
        };

        // 4. total − own for each talking listener.
        let mut personal = HashMap::new();
        for (id, s) in self.sources.iter_mut() {
            let talking = s.last_voice_tick.is_some_and(|t| tick - t < TALK_HANGOVER_TICKS);
            if !(talking && s.listens) {
                s.encoder = None;
                continue;
            }
            if s.encoder.is_none() {
                match encoder(self.kbps) {
                    Ok(e) => s.encoder = Some((e, self.shared_limiter.clone())),
                    Err(_) => continue,
                }
            }
            let (enc, lim) = s.encoder.as_mut().unwrap();
            mix::mix_minus(&self.total, Some(&s.pcm), lim, &mut self.out_pcm);
            if let Ok(n) = enc.encode(&self.out_pcm, &mut buf) {
                personal.insert(id.clone(), Bytes::copy_from_slice(&buf[..n]));
                encodes += 1;
            }
        }
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.stats.encodes.fetch_add(encodes, Ordering::Relaxed);
        self.stats.encodes_last_tick.store(encodes, Ordering::Relaxed);
        let _ = self.out.send(Arc::new(MixFrame { tick, shared, personal }));
    }
}
