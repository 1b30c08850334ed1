//! `bindery` — the command line.

use std::path::PathBuf;

use bindery_server::config::{Config, LogFormat};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bindery", version, about = "Directory-backed console and authentication gateway")]
struct Cli {
    /// Configuration file (default: ./bindery.toml when it exists). Every key
    /// can also be set as BINDERY_<KEY> in the environment, which wins.
    #[arg(long, short, global = true, env = "BINDERY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (console, REST API).
    Serve,
    /// Administrative tasks on the database.
    Admin {
        #[command(subcommand)]
        task: AdminTask,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        task: ConfigTask,
    },
}

#[derive(Subcommand)]
enum AdminTask {
    /// Give a local user a new one-time password (printed once) and unlock them.
    ResetPassword {
        /// The username (case does not matter).
        username: String,
    },
}

#[derive(Subcommand)]
enum ConfigTask {
    /// Load the configuration, report what is wrong, print the result (secrets redacted).
    Check,
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bindery: configuration error:\n{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Config { task: ConfigTask::Check } => {
            println!("configuration OK:\n{cfg:#?}");
            Ok(())
        }
        Command::Serve => {
            init_logging(&cfg);
            bindery_server::serve(cfg).await
        }
        Command::Admin { task: AdminTask::ResetPassword { username } } => reset_password(&cfg, &username).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bindery: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn reset_password(cfg: &Config, username: &str) -> anyhow::Result<()> {
    let (service, created) = bindery_server::open(cfg).await?;
    if let Some(p) = created {
        println!("created the first administrator `admin` with one-time password: {}", p.expose());
    }
    let password =
        service.reset_password_offline(username).await.map_err(|e| anyhow::anyhow!("cannot reset the password of {username}: {e}"))?;
    println!("one-time password for {username}: {}", password.expose());
    println!("(it must be changed at the next sign-in; their sessions have ended)");
    service.store().close().await;
    Ok(())
}
