-- The table deploy/compose/ciosync.toml syncs; run once, when the Postgres
-- volume is created.
CREATE TABLE public.users (
    id bigint PRIMARY KEY,
    email text,
    first_name text,
    plan text,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.users (id, email, first_name, plan)
VALUES (1, 'ann@example.com', 'Ann', 'free');
