"""The NGX Pulse sync server: accounts, REST API and the exactly-once push endpoint over Postgres."""
