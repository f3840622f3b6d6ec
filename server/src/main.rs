//! The `moderato` binary: see `server::cli`.

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers
/// across the runtime's threads, and glibc's allocator showed up at 7-10 % of the server's
/// CPU under load (`_int_malloc`, `_int_free`, `malloc_consolidate` in `perf`). The load
/// bench (`server/benches/load.rs`) measured 240 against 280 µs of CPU per comment at 16
/// posters on SQLite, 1.15x the comments a second, against the same code without it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    if let Err(e) = server::cli::run().await {
        // One line, as scripts expect: the error and its causes.
        eprintln!("moderato: {e:#}");
        std::process::exit(1);
    }
}
