//! The node's settings, kept in its data directory (`settings.json`) so that a restart
//! without flags keeps them.
//!
//! Only what the farmer tells the node is kept here (its location); what it measures
//! (capacity) is probed again on every start. A flag given on the command line
//! overrides the saved value, and the result is saved again once the ledger accepted it.

use std::path::{Path, PathBuf};

use peergrid_core::Location;
use serde::{Deserialize, Serialize};

use crate::world::{WorldError, write_atomic};

/// A location field by field, each given or not; a field not given keeps its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocationUpdate {
    /// Country name or ISO code.
    pub country: Option<String>,
    /// City name.
    pub city: Option<String>,
    /// Latitude in millionths of a degree.
    pub latitude_micro: Option<i32>,
    /// Longitude in millionths of a degree.
    pub longitude_micro: Option<i32>,
}

impl LocationUpdate {
    /// `base` with the fields given here replaced.
    pub fn over(&self, base: &Location) -> Location {
        Location {
            country: self.country.clone().unwrap_or_else(|| base.country.clone()),
            city: self.city.clone().unwrap_or_else(|| base.city.clone()),
            latitude_micro: self.latitude_micro.unwrap_or(base.latitude_micro),
            longitude_micro: self.longitude_micro.unwrap_or(base.longitude_micro),
        }
    }

    /// The fields not given here taken from `saved`, when there is one.
    pub fn or(self, saved: Option<&Location>) -> LocationUpdate {
        let Some(saved) = saved else {
            return self;
        };
        LocationUpdate {
            country: self.country.or_else(|| Some(saved.country.clone())),
            city: self.city.or_else(|| Some(saved.city.clone())),
            latitude_micro: self.latitude_micro.or(Some(saved.latitude_micro)),
            longitude_micro: self.longitude_micro.or(Some(saved.longitude_micro)),
        }
    }
}

/// What `settings.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Where the machine is, as last registered on the ledger.
    pub location: Option<Location>,
}

impl Settings {
    fn file(dir: &Path) -> PathBuf {
        dir.join("settings.json")
    }

    /// The settings saved in `dir`, or none the first time.
    pub fn load(dir: &Path) -> Result<Settings, WorldError> {
        let file = Self::file(dir);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                WorldError::new(
                    "corrupt settings file (remove it and pass --country, --city, --latitude and \
                     --longitude again)",
                    &file,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(WorldError::new("cannot read", &file, e)),
        }
    }

    /// Save the settings in `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<(), WorldError> {
        let file = Self::file(dir);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| WorldError::new("cannot encode", &file, std::io::Error::other(e)))?;
        write_atomic(&file, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ghent() -> Location {
        Location {
            country: "BE".into(),
            city: "Ghent".into(),
            latitude_micro: 51_050_000,
            longitude_micro: 3_720_000,
        }
    }

    #[test]
    fn flags_override_the_saved_location_field_by_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Settings::load(dir.path()).expect("none yet"),
            Settings::default()
        );
        let saved = Settings {
            location: Some(ghent()),
        };
        saved.save(dir.path()).expect("save");
        let loaded = Settings::load(dir.path()).expect("load");
        assert_eq!(loaded, saved);
        let saved = loaded.location.as_ref();
        // No flag: the saved location, whatever the ledger holds, not an empty one.
        let none = LocationUpdate::default();
        assert_eq!(none.clone().or(saved).over(&Location::default()), ghent());
        // One flag: that field changes, the others stay.
        let city = LocationUpdate {
            city: Some("Antwerp".into()),
            ..LocationUpdate::default()
        };
        let moved = city.or(saved).over(&Location::default());
        assert_eq!(moved.city, "Antwerp");
        assert_eq!(moved.country, "BE");
        assert_eq!(moved.latitude_micro, 51_050_000);
        // Nothing saved (a data directory from before settings.json): what the ledger has.
        assert_eq!(none.clone().or(None).over(&ghent()), ghent());
        assert_eq!(
            none.or(None).over(&Location::default()),
            Location::default()
        );
    }

    #[test]
    fn a_corrupt_settings_file_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("settings.json"), b"{not json").expect("write");
        let e = Settings::load(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("--country"), "{e}");
    }
}
