-- Inbox of the consumer-side dedup module (README, "The consumer side"). Each consuming
-- service keeps these tables in its own database and writes them in the same
-- transaction as its effects, so an event's effect, its inbox row and the
-- consumer's Kafka offset commit or roll back together.

-- One row per (consumer, event): the primary key is what makes an effect
-- happen once. status: applied | rejected (a business "no", still final) |
-- parked (poison) | compensated (the effect was undone) |
-- preempted (a compensation arrived first; the late original is skipped).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text,
    status        text NOT NULL,
    topic         text,
    kafka_partition integer,
    kafka_offset  bigint,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
-- Retention deletes by age in small batches.
CREATE INDEX IF NOT EXISTS processed_events_age ON processed_events (processed_at);

-- Where each consumer resumes: written with the effects, read on assignment.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, kafka_partition)
);

-- Messages that can never be applied (no or bad event id, an effect that
-- refused the payload): kept with the reason; the partition moves on.
CREATE TABLE IF NOT EXISTS dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer        text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_id        text,
    event_type      text,
    msg_key         bytea,
    payload         bytea,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, kafka_partition, kafka_offset)
);
