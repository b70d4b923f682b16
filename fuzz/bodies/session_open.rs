// The body of the `session_open` fuzz target (fuzz/fuzz_targets/session_open.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::downstream::seal::{open, seal};
use gatehouse::keyring::Keyring;

const KEY: [u8; 32] = [7; 32];

pub fn fuzz_one(data: &[u8]) {
    let sealer = Keyring::from_bytes(&[("k1", KEY), ("k0", [1; 32])]).unwrap();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let opened = if mode & 1 == 0 {
        let Ok(id) = std::str::from_utf8(rest) else {
            return;
        };
        open(&sealer, id)
    } else {
        let cipher = Aes256Gcm::new(&KEY.into());
        let nonce = [mode; 12];
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: rest,
                    aad: b"k1",
                },
            )
            .unwrap();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        open(&sealer, &format!("k1.{}", URL_SAFE_NO_PAD.encode(raw)))
    };
    if let Ok(claims) = opened {
        let again = open(&sealer, &seal(&sealer, &claims));
        assert_eq!(again.as_ref(), Ok(&claims));
    }
}
