//! Integration tests: one binary, one behaviour per file, each against a
//! real Postgres (a throwaway cluster started here) and the emulator.

mod support;

mod backfill_resumes_after_restart;
mod backfill_selects_rows_and_attributes;
mod backfill_yields_to_newer_changes;
mod bad_config_exits_2;
mod check_reports_what_to_fix;
mod customerio_outage_loses_nothing;
mod customerio_refusals;
mod default_identity_sends_every_mapped_attribute;
mod definite_postgres_errors_stop_the_daemon;
mod delete_deletes_the_customer;
mod demo_runs_end_to_end;
mod emulator_answers_match_the_openapi_spec;
mod emulator_behaves_like_customerio;
mod emulator_fails_chosen_batch_items;
mod id_change_merges_the_old_customer;
mod identify_on_insert;
mod initial_copy_identifies_existing_users;
mod initial_copy_survives_kill_9;
mod kill_9_and_restart_loses_nothing;
mod noop_updates_send_nothing;
mod oversized_values_are_left_out;
mod partitioned_table_is_synced_via_its_root;
mod postgres_restart_reconnects;
mod requests_stay_within_the_rate_limit;
mod sigterm_acks_and_exits_zero;
mod sink_requests_match_the_openapi_spec;
mod slot_advances_while_synced_tables_are_idle;
mod truncate_does_not_delete;
mod unchanged_toast_is_not_sent;
mod update_sends_only_changed_attributes;
