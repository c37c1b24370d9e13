"""The /web endpoint: connections, send queues, subscriptions, the hub."""
