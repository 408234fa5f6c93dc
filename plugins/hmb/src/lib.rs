//! The HMB (httpmsgbus) consumer plugin. Work in progress.
