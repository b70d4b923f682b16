//! Opening sealed session ids ([`Sealer::open`]): the `Mcp-Session-Id` header is whatever a
//! client sends. Two ways in: the bytes as a session id (the realistic attack surface, which
//! stops at AES-GCM), and the bytes as the plaintext of a correctly sealed id (what a holder of
//! the key could make), so that the claims reader behind the cipher is reached too. Neither
//! may panic, and claims that open must seal and open again unchanged.
#![no_main]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::downstream::seal::{Sealer, SealingKey};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(vec![
        SealingKey::new("k1", &KEY),
        SealingKey::new("k0", &[1; 32]),
    ]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let opened = if mode & 1 == 0 {
        let Ok(id) = std::str::from_utf8(rest) else {
            return;
        };
        sealer.open(id)
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
        sealer.open(&format!("k1.{}", URL_SAFE_NO_PAD.encode(raw)))
    };
    if let Ok(claims) = opened {
        let again = sealer.open(&sealer.seal(&claims));
        assert_eq!(again.as_ref(), Ok(&claims));
    }
});
