//! berth: berth's own command-line client, speaking the Docker Engine API to a berthd.
//!
//! Owns: argument parsing and the presentation of API results. Does not own any engine
//! logic; it depends on no other berth crate and reaches berthd only over the API socket.

mod client;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: a cluster-aware container engine"
)]
struct Cli {
    /// Daemon socket to connect to.
    #[arg(
        short = 'H',
        long = "host",
        env = "BERTH_HOST",
        default_value = "unix:///run/berth/berth.sock"
    )]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the client and daemon versions.
    Version,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = client::Client::from_host(&cli.host)?;
    match cli.command {
        Command::Version => {
            println!("Client: berth {}", env!("CARGO_PKG_VERSION"));
            let v = client.get_json("/version")?;
            println!(
                "Server: berth {} (API {}, min {})",
                v["Version"].as_str().unwrap_or("?"),
                v["ApiVersion"].as_str().unwrap_or("?"),
                v["MinAPIVersion"].as_str().unwrap_or("?"),
            );
        }
    }
    Ok(())
}
