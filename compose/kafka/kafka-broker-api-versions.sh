#!/usr/bin/env bash
# As in the Kafka distribution (the compose file's healthcheck runs it); warnings only, to stderr.
exec java -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j.configuration=file:/opt/kafka/tools-log4j.properties \
  -cp '/opt/kafka/libs/*' kafka.admin.BrokerApiVersionsCommand "$@"
