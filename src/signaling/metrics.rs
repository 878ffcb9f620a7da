//! `GET /metrics`: Prometheus text format, built from the rooms' counters at each scrape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::AppState;

/// What the last scrape saw, to turn frame counters into a rate.
#[derive(Default)]
pub(super) struct Metrics {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &["room"]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["room"]).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub(super) async fn handler(State(st): State<AppState>) -> Response {
    let r = Registry::new();
    let rooms_g = IntGauge::new("tessera_rooms", "Rooms running").expect("valid metric");
    r.register(Box::new(rooms_g.clone())).expect("unique metric");
    let participants = gauge(&r, "tessera_participants", "Participants in the room");
    let encoders = gauge(&r, "tessera_video_encoders", "Video encoder branches running (one per codec)");
    let audio_encodes =
        gauge(&r, "tessera_audio_encodes_per_tick", "Opus encodes in the last 20 ms tick (talkers + 1 at most)");
    let fps =
        GaugeVec::new(Opts::new("tessera_output_fps", "Composite frames per second since the last scrape"), &["room"])
            .expect("valid metric");
    r.register(Box::new(fps.clone())).expect("unique metric");
    let frames = counter(&r, "tessera_frames_out_total", "Composite frames produced");
    let dropped =
        counter(&r, "tessera_frames_dropped_total", "Decoded input frames that could not be drawn into the composite");
    let keyframes = counter(&r, "tessera_keyframes_forced_total", "Keyframes forced on the room's encoders");
    let plis = counter(&r, "tessera_plis_sent_total", "PLIs sent to publishers");
    let requests = counter(&r, "tessera_keyframe_requests_received_total", "PLI/FIR received from receivers");

    let rooms = st.rooms.all();
    rooms_g.set(rooms.len() as i64);
    let mut last = st.metrics.last.lock().unwrap();
    let now = Instant::now();
    for room in &rooms {
        let info = room.info();
        let l = [info.room.as_str()];
        participants.with_label_values(&l).set(info.participants.len() as i64);
        encoders.with_label_values(&l).set(info.encoders as i64);
        audio_encodes.with_label_values(&l).set(info.audio_encodes_last_tick as i64);
        frames.with_label_values(&l).inc_by(info.frames_out);
        dropped.with_label_values(&l).inc_by(info.frames_dropped);
        keyframes.with_label_values(&l).inc_by(info.keyframes_forced);
        plis.with_label_values(&l).inc_by(info.plis_sent_total);
        requests.with_label_values(&l).inc_by(info.keyframe_requests_total);
        let rate = match last.insert(info.room.clone(), (now, info.frames_out)) {
            Some((t, n)) if now > t && info.frames_out >= n => {
                (info.frames_out - n) as f64 / now.duration_since(t).as_secs_f64()
            }
            _ => info.frames_out as f64 / info.age_s.max(1e-3),
        };
        fps.with_label_values(&l).set(rate);
    }
    last.retain(|k, _| rooms.iter().any(|r| r.name() == k));
    drop(last);
    let mut out = vec![];
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
