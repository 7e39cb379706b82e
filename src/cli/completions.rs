//! `ferry completions SHELL` and `ferry man`: shell completion scripts (clap_complete) and man pages
//! (clap_mangen), generated from the same command-line definition that parses the flags, so they never
//! drift from it.

use std::path::PathBuf;

use clap::{Args, CommandFactory as _};

use crate::error::{Error, Result, Stage};

/// Arguments of `ferry completions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  ferry completions bash > ~/.local/share/bash-completion/completions/ferry
  ferry completions zsh > ~/.zfunc/_ferry
  ferry completions fish > ~/.config/fish/completions/ferry.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

/// Arguments of `ferry man`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  ferry man | man -l -
  ferry man --dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// Write ferry.1 and a page per subcommand (ferry-convert.1, …) into this folder instead of
    /// printing ferry.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::io(Stage::Sink, Some(what), e)
}

/// Prints the completion script for a shell.
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut out);
    super::print_out(&String::from_utf8_lossy(&out))
}

/// Prints ferry.1, or writes every page into a folder.
pub fn man(args: ManArgs) -> Result<()> {
    let command = super::Cli::command();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| io_error("standard output", e))?;
        return super::print_out(&String::from_utf8_lossy(&out));
    };
    let shown = dir.display().to_string();
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&shown, e))?;
    clap_mangen::generate_to(command, &dir).map_err(|e| io_error(&shown, e))
}
