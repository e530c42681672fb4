//! The caller's speech: the twelve German utterances shipped as mu-law, or the user's own WAVs.

/// One thing the caller says, as 8 kHz mu-law audio.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// What is said (the file name for a user's own recordings).
    pub text: String,
    /// 8 kHz mono mu-law bytes (160 per 20 ms).
    pub mulaw: Vec<u8>,
}
