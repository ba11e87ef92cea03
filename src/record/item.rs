//! An identify's item, as the sink encoded it, diffed against the record
//! without building its values: each attribute's value is read as the JSON
//! text it was sent as ([`RawValue`], borrowed from the item), fingerprinted
//! from that text, and the item is written again only when attributes are
//! taken out, by copying the text of those left.
//!
//! Each delivery task diffs a whole batch (500 items) on the runtime's
//! worker threads; parsing every item into a `serde_json::Value` and
//! encoding it again allocated each attribute's name and value, and that
//! churn stayed in the worker threads' heaps (BENCHMARKS.md, "Peak RSS").
//!
//! The fingerprint is the one [`super::fingerprint`] gives the value sent:
//! the SHA-256 of its JSON as sent, which is this text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{fingerprint_of_json, holds, outcome, Assigned, Diff, Fingerprints};

/// An identify item's attributes, read from its JSON.
pub struct Identify<'a> {
    /// Where the attributes object is in the item: `json[at..at + len]`.
    at: usize,
    len: usize,
    attributes: Vec<Attribute<'a>>,
}

struct Attribute<'a> {
    name: Cow<'a, str>,
    value: &'a RawValue,
    fingerprint: i64,
}

/// What diffing an identify item against the record came to.
pub struct Diffed {
    pub diff: Diff,
    /// What accepting the item (as [`Diffed::json`] has it) sets.
    pub assigned: Assigned,
    /// The item without the attributes taken out; `None` when none were.
    pub json: Option<Vec<u8>>,
}

impl<'a> Identify<'a> {
    /// The attributes of the item `json`: none when it has none; `None`
    /// should it not be an item at all.
    pub fn read(json: &'a [u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Item<'a> {
            #[serde(borrow)]
            attributes: Option<&'a RawValue>,
        }
        let item: Item<'a> = serde_json::from_slice(json).ok()?;
        let Some(raw) = item.attributes else {
            return Some(Self { at: json.len(), len: 0, attributes: Vec::new() });
        };
        let text: &'a str = raw.get();
        // The value is borrowed from `json`: its place there is its address's.
        let at = (text.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
        if json.get(at..at + text.len()) != Some(text.as_bytes()) {
            return None;
        }
        // Anything but an object is read as no attributes, as before.
        let Named(named) = serde_json::from_str(text).unwrap_or(Named(Vec::new()));
        let attributes = named
            .into_iter()
            .map(|(name, value)| {
                let fingerprint = fingerprint_of_json(value.get().as_bytes());
                Attribute { name, value, fingerprint }
            })
            .collect();
        Some(Self { at, len: text.len(), attributes })
    }

    /// Each attribute's name and fingerprint, in the item's order.
    pub fn fingerprints(&self) -> impl Iterator<Item = (&str, i64)> {
        self.attributes.iter().map(|a| (a.name.as_ref(), a.fingerprint))
    }

    /// Takes out of the item `json` (the one read) the attributes whose
    /// value Customer.io holds by the record's `known`, as
    /// [`super::diff`] does with the attributes' values.
    pub fn diff(&self, json: &[u8], known: Option<&Fingerprints>) -> Diffed {
        let held = |a: &Attribute| holds(known, &a.name, a.fingerprint);
        let count = self.attributes.iter().filter(|a| held(a)).count();
        let diff = outcome(known, self.attributes.len(), count);
        let kept = || self.attributes.iter().filter(move |a| !held(a));
        let assigned = match diff {
            Diff::Unchanged => Assigned::of([]),
            _ => Assigned::of(kept().map(|a| (a.name.as_ref(), a.fingerprint))),
        };
        let json = match diff {
            Diff::Stripped(held) if held > 0 => Some(self.with_only(json, kept())),
            _ => None,
        };
        Diffed { diff, assigned, json }
    }

    /// The item `json` with only the attributes `kept`, in their order.
    fn with_only<'k>(
        &'k self,
        json: &[u8],
        kept: impl Iterator<Item = &'k Attribute<'a>>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(json.len());
        out.extend_from_slice(&json[..self.at]);
        out.push(b'{');
        for (i, attribute) in kept.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a str to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, attribute.name.as_ref());
            out.push(b':');
            out.extend_from_slice(attribute.value.get().as_bytes());
        }
        out.push(b'}');
        out.extend_from_slice(&json[self.at + self.len..]);
        out
    }
}

/// An object's members in order, each value as its JSON text.
struct Named<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Named<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Named<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Name(name), value)) = map.next_entry::<Name, &RawValue>()? {
                    members.push((name, value));
                }
                Ok(Named(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A member's name, borrowed unless it had escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}
