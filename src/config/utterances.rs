//! The caller's speech: the twelve German utterances shipped as mu-law, or the user's own WAVs.
//!
//! The shipped files (`scenarios/audio/NN.wav`, made by `scripts/gen-audio`) are compiled in.
//! A user's `--audio-dir` may hold WAVs in any common encoding, rate and channel count
//! ([`crate::protocol::wav`] turns them into Twilio's phone audio); each is checked here for a
//! plausible utterance's length, and every problem names its file.

use crate::ai_model::UTTERANCES;
use crate::protocol::{mulaw, wav};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// One thing the caller says, as 8 kHz mu-law audio.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// What is said (the file name for a user's own recordings).
    pub text: String,
    /// 8 kHz mono mu-law bytes (160 per 20 ms).
    pub mulaw: Vec<u8>,
}

/// The shortest recording `load_dir` accepts: anything shorter is not an utterance.
pub const MIN_DURATION: Duration = Duration::from_millis(100);
/// The longest recording `load_dir` accepts: a caller's turn, not a whole call.
pub const MAX_DURATION: Duration = Duration::from_secs(60);

/// An optional file in an audio dir giving each recording's text: `stem<TAB>text` per line.
pub const TEXTS_FILE: &str = "utterances.txt";

/// The shipped recordings, in the order of `ai_model::UTTERANCES`.
const BUILTIN_WAVS: [&[u8]; 12] = [
    include_bytes!("../../scenarios/audio/01.wav"),
    include_bytes!("../../scenarios/audio/02.wav"),
    include_bytes!("../../scenarios/audio/03.wav"),
    include_bytes!("../../scenarios/audio/04.wav"),
    include_bytes!("../../scenarios/audio/05.wav"),
    include_bytes!("../../scenarios/audio/06.wav"),
    include_bytes!("../../scenarios/audio/07.wav"),
    include_bytes!("../../scenarios/audio/08.wav"),
    include_bytes!("../../scenarios/audio/09.wav"),
    include_bytes!("../../scenarios/audio/10.wav"),
    include_bytes!("../../scenarios/audio/11.wav"),
    include_bytes!("../../scenarios/audio/12.wav"),
];

/// The twelve shipped utterances (`ai_model::UTTERANCES` spoken by espeak-ng), decoded once.
pub fn builtin() -> Vec<Utterance> {
    static BUILTIN: OnceLock<Vec<Utterance>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            UTTERANCES
                .iter()
                .zip(BUILTIN_WAVS)
                .map(|(text, wav)| Utterance {
                    text: text.to_string(),
                    // The files are part of the build and a test decodes them: this cannot fail.
                    mulaw: wav::decode_wav(wav).expect("shipped audio decodes"),
                })
                .collect()
        })
        .clone()
}

/// How long an utterance takes to play at 8 kHz.
pub fn duration(u: &Utterance) -> Duration {
    // One mu-law byte is one 8 kHz sample: 125 us.
    Duration::from_micros(u.mulaw.len() as u64 * 1_000_000 / mulaw::SAMPLE_RATE as u64)
}

/// The user's recordings for `--audio-dir`: every `*.wav` in `dir`, sorted by file name.
///
/// The text of each is its line in `dir/utterances.txt` if there is one, else the file stem.
/// Every problem is an error naming the file, so a bad directory fails before a run starts.
pub fn load_dir(dir: &Path) -> Result<Vec<Utterance>> {
    let files = wav_files(dir)?;
    let texts = read_texts(dir)?;
    files
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = texts.get(&stem).cloned().unwrap_or(stem);
            Ok(Utterance {
                text,
                mulaw: load_file(path)?,
            })
        })
        .collect()
}

fn wav_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let shown = dir.display();
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("audio dir {shown} does not exist"),
        _ => anyhow!("audio dir {shown}: {e}"),
    })?;
    if !meta.is_dir() {
        bail!("audio dir {shown} is not a directory");
    }
    let mut files = Vec::new();
    let unreadable = |e: std::io::Error| anyhow!("audio dir {shown}: cannot read: {e}");
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let is_wav = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        // Not `is_file()`: a dangling link must be reported, not silently skipped.
        if is_wav && !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("audio dir {shown} has no .wav files");
    }
    files.sort();
    Ok(files)
}

/// `dir/utterances.txt` as stem -> text; empty when the file is absent.
fn read_texts(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join(TEXTS_FILE);
    let content = match std::fs::read_to_string(&path) {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => bail!("{}: cannot read: {e}", path.display()),
    };
    let mut texts = HashMap::new();
    for (n, line) in content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Some((stem, text)) = line.split_once('\t') else {
            bail!("{}:{}: expected `name<TAB>text`", path.display(), n + 1);
        };
        texts.insert(stem.trim().to_string(), text.trim().to_string());
    }
    Ok(texts)
}

fn load_file(path: &Path) -> Result<Vec<u8>> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{shown}: cannot read: {e}"))?;
    decode_checked(&bytes).map_err(|e| anyhow!("{shown}: {e:#}"))
}

/// `decode_wav` with `load_dir`'s rules: a non-empty file of a plausible utterance's length.
fn decode_checked(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.is_empty() {
        bail!("the file is empty");
    }
    // Judged from the header, before the costly resampling of a file that is too long.
    let secs = wav::duration_secs(bytes)?;
    if secs < MIN_DURATION.as_secs_f64() {
        bail!(
            "too short: {secs:.3} s of audio (at least {} ms)",
            MIN_DURATION.as_millis()
        );
    }
    if secs > MAX_DURATION.as_secs_f64() {
        bail!(
            "too long: {secs:.1} s of audio (at most {} s)",
            MAX_DURATION.as_secs()
        );
    }
    wav::decode_wav(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wav::tests::wav;

    #[test]
    fn duration_counts_8khz_samples() {
        let u = Utterance {
            text: String::new(),
            mulaw: vec![mulaw::SILENCE; 12_345],
        };
        assert_eq!(duration(&u), Duration::from_micros(12_345 * 125));
    }

    #[test]
    fn load_rules_bound_the_duration() {
        let short = wav(7, 1, 8_000, 8, &[0x80; 799]);
        assert!(decode_checked(&short)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        assert_eq!(
            decode_checked(&wav(7, 1, 8_000, 8, &[0x80; 800])).unwrap().len(),
            800
        );
        // A header can claim 61 s of audio cheaply: 2 channels of 32-bit floats at 1 kHz...
        let long = wav(3, 2, 1_000, 32, &vec![0; 8 * 61_000]);
        assert!(decode_checked(&long)
            .unwrap_err()
            .to_string()
            .contains("too long: 61.0 s"));
        assert!(decode_checked(&[]).unwrap_err().to_string().contains("empty"));
    }
}
