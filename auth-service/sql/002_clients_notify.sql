-- Every change to a client is announced on channel auth_clients with the
-- client_id as payload, so each auth-service instance drops its cached copy
-- (auth-service/src/client_cache.c) the moment the change commits.
CREATE FUNCTION auth.notify_client_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('auth_clients', OLD.client_id);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.client_id <> OLD.client_id) THEN
        PERFORM pg_notify('auth_clients', NEW.client_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_notify
    AFTER INSERT OR UPDATE OR DELETE ON auth.clients
    FOR EACH ROW EXECUTE FUNCTION auth.notify_client_change();
