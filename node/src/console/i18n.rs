//! The console's words: one message catalogue per language, embedded in the
//! binary (`messages/AREA.zh-CN.toml`, `messages/AREA.en.toml`, one pair per area). Simplified Chinese by
//! default; English when the operator switches (a `civmesh_lang` cookie).
//! Templates hold keys, never words.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 简体中文, the default.
    ZhCn,
    /// English.
    En,
}

impl Lang {
    /// The language a `civmesh_lang` cookie value names; Chinese for anything else.
    pub fn from_cookie(value: Option<&str>) -> Self {
        match value {
            Some("en") => Lang::En,
            _ => Lang::ZhCn,
        }
    }

    /// The `lang` attribute and cookie value.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// One language's messages by key.
#[derive(Debug)]
pub struct Catalogue {
    messages: BTreeMap<String, String>,
}

impl Catalogue {
    /// The message `key` names; the key itself if the catalogue lacks it
    /// (a test keeps both catalogues complete).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.messages.get(key).map_or(key, String::as_str)
    }
}

/// The catalogue files, one pair per area of the console: (Chinese, English).
const CATALOGUES: [(&str, &str); 6] = [
    (include_str!("messages/base.zh-CN.toml"), include_str!("messages/base.en.toml")),
    (include_str!("messages/corrections.zh-CN.toml"), include_str!("messages/corrections.en.toml")),
    (include_str!("messages/officer.zh-CN.toml"), include_str!("messages/officer.en.toml")),
    (include_str!("messages/auditor.zh-CN.toml"), include_str!("messages/auditor.en.toml")),
    (include_str!("messages/dashboard.zh-CN.toml"), include_str!("messages/dashboard.en.toml")),
    (include_str!("messages/received.zh-CN.toml"), include_str!("messages/received.en.toml")),
];

/// One language's messages from every area's file (a test keeps the keys
/// apart and complete).
fn parse(files: impl Iterator<Item = &'static str>) -> Catalogue {
    let mut messages = BTreeMap::new();
    for text in files {
        messages.extend(toml::from_str::<BTreeMap<String, String>>(text).unwrap_or_default());
    }
    Catalogue { messages }
}

/// The catalogue of `lang`.
pub fn catalogue(lang: Lang) -> &'static Catalogue {
    static ZH_CN: OnceLock<Catalogue> = OnceLock::new();
    static EN: OnceLock<Catalogue> = OnceLock::new();
    match lang {
        Lang::ZhCn => ZH_CN.get_or_init(|| parse(CATALOGUES.iter().map(|(zh, _)| *zh))),
        Lang::En => EN.get_or_init(|| parse(CATALOGUES.iter().map(|(_, en)| *en))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both catalogues parse, name the same keys, and hold every key a
    /// template or the console's code uses.
    #[test]
    fn both_catalogues_hold_every_key_used() {
        let (mut zh, mut en) = (BTreeMap::new(), BTreeMap::new());
        for (zh_text, en_text) in CATALOGUES {
            let zh_area = toml::from_str::<BTreeMap<String, String>>(zh_text).unwrap();
            let en_area = toml::from_str::<BTreeMap<String, String>>(en_text).unwrap();
            assert_eq!(zh_area.keys().collect::<Vec<_>>(), en_area.keys().collect::<Vec<_>>());
            let before = zh.len();
            zh.extend(zh_area.clone());
            en.extend(en_area);
            assert_eq!(zh.len(), before + zh_area.len(), "a key is in two areas' files");
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        for dir in [root.join("templates/console"), root.join("src/console")] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|ext| ext == "html" || ext == "rs") {
                    sources.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        // Every quoted `namespace.key` whose namespace the catalogues use.
        let namespaces: std::collections::BTreeSet<&str> =
            zh.keys().filter_map(|key| key.split_once('.')).map(|(namespace, _)| namespace).collect();
        let mut used = 0;
        for source in &sources {
            for quoted in source.split('"').skip(1).step_by(2) {
                let Some((namespace, rest)) = quoted.split_once('.') else { continue };
                let plain =
                    |text: &str| !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '-');
                if namespaces.contains(namespace) && plain(rest) {
                    assert!(zh.contains_key(quoted), "{quoted} is used but not in the catalogues");
                    used += 1;
                }
            }
        }
        assert!(used > 20, "found only {used} uses");
        assert!(zh.values().all(|text| !text.is_empty()) && en.values().all(|text| !text.is_empty()));
    }
}
