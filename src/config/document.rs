//! The documented default configuration: the text of `conf/mailhop.toml`
//! (`mailhop config defaults`), written from the tables' key documentation.

use serde::Serialize;

use super::Config;
use super::tables::{
    CacheConfig, DaemonConfig, DnsConfig, KeyDoc, LmtpConfig, LogConfig, SmtpConfig, TlsConfig,
};

/// Comment block at the top of [`Config::defaults_toml`].
pub(super) const DEFAULTS_HEADER: &str = "\
# mailhop configuration: the complete default configuration.
#
# Every key is optional: a key (or table, or the whole file) that is left out
# takes the default shown here. Each key keeps the meaning and the default of
# the Postfix parameter named above it.
#
# Durations are strings: an integer followed by a unit, one of ms, s, m, h, d
# or w (\"30s\", \"5m\", \"0s\").
#
# Keys shown commented out are unset by default and then take the [smtp]
# value given in the comment; uncomment them to set them.
";

impl Config {
    /// The complete default configuration as documented TOML text that
    /// [`Config::from_toml_str`] accepts: every key with a comment saying
    /// what it does and which Postfix parameter it mirrors.  Optional keys,
    /// unset by default, appear as commented lines showing the value they
    /// fall back to.  `conf/mailhop.toml` is this text.
    pub fn defaults_toml() -> String {
        let mut out = String::from(DEFAULTS_HEADER);
        let smtp = table_values(&SmtpConfig::default());
        write_table(&mut out, SmtpConfig::TABLE, SmtpConfig::KEYS, &smtp, None);
        write_table(
            &mut out,
            LmtpConfig::TABLE,
            LmtpConfig::KEYS,
            &table_values(&LmtpConfig::default()),
            Some(&smtp),
        );
        write_table(
            &mut out,
            DnsConfig::TABLE,
            DnsConfig::KEYS,
            &table_values(&DnsConfig::default()),
            None,
        );
        write_table(
            &mut out,
            TlsConfig::TABLE,
            TlsConfig::KEYS,
            &table_values(&TlsConfig::default()),
            None,
        );
        write_table(
            &mut out,
            DaemonConfig::TABLE,
            DaemonConfig::KEYS,
            &table_values(&DaemonConfig::default()),
            None,
        );
        write_table(
            &mut out,
            CacheConfig::TABLE,
            CacheConfig::KEYS,
            &table_values(&CacheConfig::default()),
            None,
        );
        write_table(
            &mut out,
            LogConfig::TABLE,
            LogConfig::KEYS,
            &table_values(&LogConfig::default()),
            None,
        );
        out
    }
}

/// A table's default values as TOML values, keyed by name.
pub(super) fn table_values<T: Serialize>(table: &T) -> Result<toml::Table, String> {
    toml::Table::try_from(table).map_err(|err| err.to_string())
}

/// Appends `[name]` with every key: its doc comment, the Postfix parameter,
/// and the assignment (or, for unset optional keys, a commented assignment
/// of the `[smtp]` value from `fallback`).
pub(super) fn write_table(
    out: &mut String,
    name: &str,
    keys: &[KeyDoc],
    values: &Result<toml::Table, String>,
    fallback: Option<&Result<toml::Table, String>>,
) {
    out.push_str(&format!("\n[{name}]\n"));
    let values = match values {
        Ok(values) => values,
        Err(err) => {
            out.push_str(&format!(
                "# cannot render the defaults of [{name}]: {err}\n"
            ));
            return;
        }
    };
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for line in key.doc.lines() {
            out.push('#');
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("# Mirrors Postfix: {}\n", key.postfix));
        if let Some(value) = values.get(key.name) {
            out.push_str(&format!("{} = {value}\n", key.name));
            continue;
        }
        let inherited = key.unset_from.and_then(|from| {
            let value = fallback?.as_ref().ok()?.get(from)?;
            Some((from, value))
        });
        match inherited {
            Some((from, value)) => out.push_str(&format!(
                "# {} = {value}  (default: the [smtp] {from} value)\n",
                key.name
            )),
            None => out.push_str(&format!("# {} is unset by default\n", key.name)),
        }
    }
}
