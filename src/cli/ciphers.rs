//! `--ssl-ciphers`: OpenSSL's cipher-list syntax (what uvicorn hands to
//! `SSLContext.set_ciphers`) mapped onto the TLS 1.2 suites rustls offers. As with
//! OpenSSL, the list governs TLS 1.2 only (TLS 1.3 suites stay on), unknown names and
//! keywords match nothing, and a list that selects nothing is an error.
//!
//! Syntax: elements separated by `:` (or `,` / spaces); each is a suite name (OpenSSL's
//! `ECDHE-RSA-AES128-GCM-SHA256` or IANA's `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) or
//! keywords joined by `+` (all must match: `ECDHE+AESGCM`); a `!` or `-` prefix removes
//! (`!` for good), `+` prefix (reordering) and `@STRENGTH` / `@SECLEVEL=n` are accepted
//! and change nothing here.

use rustls::crypto::ring::cipher_suite as rs;
use rustls::SupportedCipherSuite;

struct Suite {
    suite: SupportedCipherSuite,
    openssl: &'static str,
    iana: &'static str,
    /// OpenSSL keywords that select it.
    keywords: &'static [&'static str],
}

const COMMON: [&str; 9] = [
    "ALL", "DEFAULT", "HIGH", "ECDHE", "EECDH", "kECDHE", "kEECDH", "TLSv1.2", "AEAD",
];

fn suites() -> Vec<Suite> {
    vec![
        Suite {
            suite: rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
            iana: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            keywords: &["aECDSA", "ECDSA", "AES", "AES256", "AESGCM", "SHA384"],
        },
        Suite {
            suite: rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
            iana: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            keywords: &["aECDSA", "ECDSA", "AES", "AES128", "AESGCM", "SHA256"],
        },
        Suite {
            suite: rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
            iana: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            keywords: &["aECDSA", "ECDSA", "CHACHA20", "SHA256"],
        },
        Suite {
            suite: rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-RSA-AES256-GCM-SHA384",
            iana: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            keywords: &["aRSA", "RSA", "AES", "AES256", "AESGCM", "SHA384"],
        },
        Suite {
            suite: rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-RSA-AES128-GCM-SHA256",
            iana: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            keywords: &["aRSA", "RSA", "AES", "AES128", "AESGCM", "SHA256"],
        },
        Suite {
            suite: rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-RSA-CHACHA20-POLY1305",
            iana: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            keywords: &["aRSA", "RSA", "CHACHA20", "SHA256"],
        },
    ]
}

impl Suite {
    fn matches(&self, term: &str) -> bool {
        term.split('+').all(|kw| {
            kw == self.openssl
                || kw == self.iana
                || COMMON.contains(&kw)
                || self.keywords.contains(&kw)
        })
    }
}

/// The TLS 1.2 suites `spec` selects, in rustls's order.
pub fn tls12_suites(spec: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = suites();
    let mut chosen = vec![false; all.len()];
    let mut banned = vec![false; all.len()];
    for element in spec.split([':', ',', ' ']).filter(|e| !e.is_empty()) {
        if element.starts_with('@') || element.starts_with('+') {
            continue;
        }
        let (remove, forever, term) = match element.as_bytes()[0] {
            b'!' => (true, true, &element[1..]),
            b'-' => (true, false, &element[1..]),
            _ => (false, false, element),
        };
        for (i, suite) in all.iter().enumerate() {
            if suite.matches(term) {
                if remove {
                    chosen[i] = false;
                    banned[i] |= forever;
                } else if !banned[i] {
                    chosen[i] = true;
                }
            }
        }
    }
    let picked: Vec<SupportedCipherSuite> = all
        .iter()
        .zip(&chosen)
        .filter(|(_, c)| **c)
        .map(|(s, _)| s.suite)
        .collect();
    if picked.is_empty() {
        let names: Vec<&str> = all.iter().map(|s| s.openssl).collect();
        return Err(format!(
            "--ssl-ciphers {spec:?} selects none of the TLS 1.2 cipher suites ferrocorn's TLS \
             (rustls) has: {}",
            names.join(", ")
        ));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        tls12_suites(spec)
            .unwrap()
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn openssl_lists() {
        assert_eq!(names("ECDHE+AESGCM:!aNULL:!MD5").len(), 4);
        assert_eq!(names("HIGH:!CHACHA20:!ECDSA").len(), 2);
        assert_eq!(
            names("ECDHE-RSA-AES128-GCM-SHA256"),
            ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
        );
        assert_eq!(
            names("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:AES256-SHA").len(),
            1
        );
        assert_eq!(names("ALL:-RSA:RSA+AES128").len(), 4);
    }

    #[test]
    fn nothing_selected_is_an_error() {
        let e = tls12_suites("AES128-SHA:DES-CBC3-SHA").unwrap_err();
        assert!(e.contains("selects none"), "{e}");
        assert!(tls12_suites("ALL:!ALL").is_err());
    }
}
