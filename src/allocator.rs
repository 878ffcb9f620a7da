//! The process's allocator: jemalloc for Rust **and** C (GStreamer, GLib, libvpx, Opus), with
//! unused pages given back to the kernel within seconds.
//!
//! Why not glibc's malloc: a media server frees most of what a room took when the room ends, but
//! from dozens of GStreamer streaming threads, each of which glibc gives its own arena (up to 8 per
//! core). Measured with `bash benches/soak.sh 8 20` (8 rooms of 4–8 participants, one after the
//! other): with glibc the RSS after each room was 71, 124, 159, 187, 229, 260, 293, 325 MiB and
//! stayed at 325 MiB idle, while the heap in use (`malloc_stats` after `malloc_trim`) stayed flat
//! at about 5 MiB — the growth is freed memory kept in fragmented arenas, not a leak. With jemalloc
//! and the settings below: 94, 69, 84, 87, 95, 75, 86, 87 MiB, and 42 MiB idle.
//!
//! `unprefixed_malloc_on_supported_platforms` makes jemalloc's `malloc`/`free` the process's own,
//! so the C libraries allocate from it too (the executable's symbols win over libc's). The
//! settings ([`malloc_conf`], jemalloc's `opt.*`; the `MALLOC_CONF` environment variable overrides
//! them): a background thread purges dirty pages (`background_thread:true`) after 2 s unused
//! (`dirty_decay_ms:2000`), and purged pages leave RSS at once (`muzzy_decay_ms:0`, no lazy
//! `MADV_FREE`), so what the operator sees as RSS is what is in use.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C `const char *` that may live in a `static`.
#[repr(transparent)]
pub struct CStrPtr(*const std::ffi::c_char);

// SAFETY: it points at a string literal, which is never written.
unsafe impl Sync for CStrPtr {}

/// jemalloc's compiled-in options (`opt.background_thread`, `opt.dirty_decay_ms`,
/// `opt.muzzy_decay_ms`), read once at its initialization: jemalloc's weak `malloc_conf`
/// symbol, which this definition replaces.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static malloc_conf: CStrPtr = CStrPtr(c"background_thread:true,dirty_decay_ms:2000,muzzy_decay_ms:0".as_ptr());
