//! The `gatehouse` command.

use clap::{Parser, Subcommand};
use gatehouse::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "An enterprise gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The YAML configuration file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    Check {
        /// The YAML configuration file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
    },
    /// Print a new random session-sealing key (base64, 32 bytes).
    SessionKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} virtual server{}, {} upstream{})",
                    config.display(),
                    c.servers.len(),
                    if c.servers.len() == 1 { "" } else { "s" },
                    c.upstreams.len(),
                    if c.upstreams.len() == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::SessionKey => {
            use base64::Engine;
            use rand::RngCore;
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Serve { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            gatehouse::telemetry::init_logging(&config.log);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(gatehouse::serve::run(config, path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("gatehouse: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
