//! `warden driver verify-attestation`: check an exported approval offline, with nothing
//! but the attestation, the host's public key and (optionally) the component.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::attestation::{self, PublicKey};

#[derive(Debug, Args)]
pub(super) struct VerifyAttestationArgs {
    /// The attestation (the JSON of `GET /drivers/{id}/attestation`).
    file: PathBuf,
    /// The host's public key (base64 or hex, as `GET /signing_keys` shows it), or
    /// `@FILE` to read it from a file. Get it from the host's operator, not from the
    /// attestation.
    #[arg(long)]
    public_key: String,
    /// The component: check that its digest is the approved one.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Print the statement as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when the attestation is valid (and the component is the approved one), 1 when
/// it is not, 2 when the input is unusable.
pub(super) fn verify_attestation(args: &VerifyAttestationArgs) -> anyhow::Result<ExitCode> {
    let key_text = match args.public_key.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => args.public_key.clone(),
    };
    let key = PublicKey::parse(&key_text).context("the public key")?;
    let text =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let envelope = attestation::parse(&text).context("the attestation")?;
    let statement = match attestation::verify(&envelope, std::slice::from_ref(&key)) {
        Ok(statement) => statement,
        Err(error) => {
            println!("INVALID: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let component = match &args.component {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some((path, crate::component::digest(&bytes)))
        }
        None => None,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statement)?);
    } else {
        println!("valid: signed by {}", key.id());
        println!("digest:      {}", statement.digest);
        println!(
            "driver:      {} {} ({})",
            statement.driver.name, statement.driver.version, statement.driver.id
        );
        let source = &statement.source;
        println!(
            "source:      {} at {}{}",
            source
                .repository
                .as_deref()
                .unwrap_or("(no repository recorded)"),
            source.commit.as_deref().unwrap_or("(no commit recorded)"),
            source
                .path
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default()
        );
        let reviewer = &statement.reviewer;
        println!(
            "approved by: {}{} at {}",
            reviewer.email.as_deref().unwrap_or(&reviewer.id),
            reviewer
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            statement.approved_at
        );
        if let Some(note) = &statement.note {
            println!("note:        {note}");
        }
    }
    if let Some((path, digest)) = component {
        if digest != statement.digest {
            println!(
                "MISMATCH: {} has digest {digest}, not the approved {}",
                path.display(),
                statement.digest
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("component:   {} is the approved component", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
