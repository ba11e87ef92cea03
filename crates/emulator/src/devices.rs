//! People's devices (push tokens). Pure: the model resolves people to
//! `cio_id`s (in `model_links.rs`) and calls in here.
//!
//! Documented (Track API document, `device_object_common`, the device
//! routes): a device is a `token` (v1 `id`), a `platform` of `ios` or
//! `android`, `last_used` Unix seconds ("if you don't pass a timestamp ...
//! we use the time of the request itself") and string `attributes`; a
//! person "can have more than one device"; add is "add or update".
//!
//! UNCONFIRMED, chosen here:
//! - A token is one device, so it belongs to one person: adding a token
//!   another person holds moves it to the new person.
//! - Updating a device merges its attributes (as identify does), keeps them
//!   when it moves, and takes the new `platform` and `last_used`.
//! - Deleting a token the person does not hold changes nothing: 200, and a
//!   failure is logged when another person holds it.
//! - A merge does not move the secondary's devices (the documented list of
//!   what a merge keeps does not name devices): they go with the secondary.

use std::collections::BTreeMap;

use ciosync_track_api::Identifier;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The platforms the published schema allows.
pub const PLATFORMS: [&str; 2] = ["ios", "android"];

/// One device, as stored and as `GET /_emulator/customers/{id}/devices`
/// lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// v2 `token`, v1 `id` (the path's `device_id` when deleting).
    pub token: String,
    /// `ios` or `android`.
    pub platform: String,
    /// Unix seconds: the client's `last_used`, else the receive time.
    pub last_used: i64,
    /// String values only, as the schema says.
    pub attributes: Map<String, Value>,
}

/// One device operation, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceOp {
    /// v1 `PUT …/devices`, v2 `add_device`.
    Add { target: Identifier, device: Device },
    /// v1 `DELETE …/devices/{device_id}`, v2 `delete_device`.
    Delete { target: Identifier, token: String },
}

impl DeviceOp {
    /// The person the device is for.
    pub fn target(&self) -> &Identifier {
        match self {
            DeviceOp::Add { target, .. } | DeviceOp::Delete { target, .. } => target,
        }
    }
}

/// Every device, by token, with the `cio_id` of the person holding it.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    by_token: BTreeMap<String, (String, Device)>,
}

/// What deleting a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The person held it; it is gone.
    Yes,
    /// Nobody holds it.
    Unknown,
    /// Another person holds it; it stays.
    OtherPerson,
}

impl Devices {
    /// Adds or updates the device for the person; returns the `cio_id` of
    /// the person it was taken from, if another held it.
    pub fn add(&mut self, cio_id: &str, device: Device) -> Option<String> {
        let (previous, mut attributes) = match self.by_token.remove(&device.token) {
            Some((holder, old)) => (Some(holder), old.attributes),
            None => (None, Map::new()),
        };
        attributes.extend(device.attributes);
        let token = device.token.clone();
        let device = Device { attributes, ..device };
        self.by_token.insert(token, (cio_id.to_owned(), device));
        previous.filter(|holder| holder != cio_id)
    }

    /// Deletes the person's device with this token.
    pub fn delete(&mut self, cio_id: &str, token: &str) -> Deleted {
        match self.by_token.get(token) {
            None => Deleted::Unknown,
            Some((holder, _)) if holder != cio_id => Deleted::OtherPerson,
            Some(_) => {
                self.by_token.remove(token);
                Deleted::Yes
            }
        }
    }

    /// Removes every device of a deleted person.
    pub fn forget_person(&mut self, cio_id: &str) {
        self.by_token.retain(|_, (holder, _)| holder != cio_id);
    }

    /// A person's devices, by token.
    pub fn of_person(&self, cio_id: &str) -> Vec<Device> {
        self.by_token
            .values()
            .filter(|(holder, _)| holder == cio_id)
            .map(|(_, device)| device.clone())
            .collect()
    }
}
