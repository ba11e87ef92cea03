//! A local stand-in for Customer.io's Track API.
