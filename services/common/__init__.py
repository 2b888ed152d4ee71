"""Code shared by the xdpguard services: settings, errors, Kafka plumbing, structs, codecs."""
