//! FlagShip tests.
