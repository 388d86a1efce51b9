"""kafka-cdp stream processing: the Faust app whose agents cut write events into windows
and turn each window into forward/backward increments, a write log and a manifest."""
