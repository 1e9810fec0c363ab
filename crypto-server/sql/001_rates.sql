-- Current rates and their history. Rates are numeric (exact decimal), kept
-- positive; history is pruned by age by the updater (currency-server/src/updater.c).
CREATE TABLE currency.rates (
    symbol     text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9]{1,10}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    rate       numeric(30, 10) NOT NULL CHECK (rate > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE currency.history (
    symbol text NOT NULL REFERENCES currency.rates (symbol) ON DELETE CASCADE,
    rate   numeric(30, 10) NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX history_symbol_at ON currency.history (symbol, at DESC);
CREATE INDEX history_at ON currency.history (at);

-- Plausible starting points (late 2026 is anyone's guess; these are the
-- seeds' orders of magnitude).
INSERT INTO currency.rates (symbol, name, rate) VALUES
    ('BTC', 'Bitcoin', 67250.00),
    ('ETH', 'Ethereum', 3520.00),
    ('USDT', 'Tether', 1.00),
    ('BNB', 'BNB', 585.00),
    ('SOL', 'Solana', 152.00),
    ('XRP', 'XRP', 0.52),
    ('USDC', 'USD Coin', 1.00),
    ('ADA', 'Cardano', 0.45),
    ('DOGE', 'Dogecoin', 0.16),
    ('TRX', 'TRON', 0.12),
    ('AVAX', 'Avalanche', 35.00),
    ('DOT', 'Polkadot', 7.10);
