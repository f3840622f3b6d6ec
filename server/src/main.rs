//! The `moderato` binary: see `server::cli`.

#[tokio::main]
async fn main() {
    if let Err(e) = server::cli::run().await {
        // One line, as scripts expect: the error and its causes.
        eprintln!("moderato: {e:#}");
        std::process::exit(1);
    }
}
