#!/usr/bin/env bash
# As in the Kafka distribution: format (or inspect) the KRaft storage.
exec java -Xmx256m -Dlog4j.configuration=file:/opt/kafka/tools-log4j.properties -cp '/opt/kafka/libs/*' kafka.tools.StorageTool "$@"
