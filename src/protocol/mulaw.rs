//! G.711 mu-law, the codec of Twilio's 8 kHz telephone audio.

/// One 20 ms frame at 8 kHz: 160 samples, one mu-law byte each.
pub const FRAME_BYTES: usize = 160;
/// Media Streams' frame period.
pub const FRAME_MS: u64 = 20;
/// Telephone audio's sample rate.
pub const SAMPLE_RATE: u32 = 8_000;
/// Mu-law's code for silence (a linear 0).
pub const SILENCE: u8 = 0xFF;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes one linear 16-bit sample.
pub fn encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - ((s as u32) << 17).leading_zeros().min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one mu-law byte to a linear 16-bit sample.
pub fn decode(byte: u8) -> i16 {
    let b = !byte as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

pub fn encode_all(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode(s)).collect()
}

pub fn decode_all(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().map(|&b| decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(decode(0xFF), 0);
        assert_eq!(encode(32_767), 0x80);
        assert_eq!(encode(-32_768), 0x00);
        assert_eq!(decode(0x80), 32_124);
        assert_eq!(decode(0x00), -32_124);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            // 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as 0xFF.
            if b == 0x7F {
                continue;
            }
            assert_eq!(encode(decode(b)), b, "code {b:#x}");
        }
    }

    #[test]
    fn error_stays_within_a_step() {
        for s in (-32_000i32..32_000).step_by(97) {
            let back = decode(encode(s as i16)) as i32;
            let step = (s.abs() / 16).max(8);
            assert!((back - s).abs() <= step, "{s} -> {back}");
        }
    }
}
