"""Message tables: ApiVersions, Metadata, Produce, Fetch, ListOffsets, InitProducerId.

Fields in wire order with the versions that carry them, as in Kafka's message definitions
(``clients/src/main/resources/common/message``). Only the versions ``apis.py`` compiles are
described; a field's ``versions`` may reach past them (``"3+"``).
"""

from sluice.protocol.kafka.schema import (
    BOOL,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    Array,
    F,
    Struct,
)

NO_AUTHORIZED_OPERATIONS = -(2**31)

# -- ApiVersions (18): v0-3; v3 is flexible ----------------------------------------------------

API_VERSIONS_REQUEST = Struct("ApiVersionsRequest", [
    F("client_software_name", STRING, "3+"),
    F("client_software_version", STRING, "3+"),
])

API_VERSIONS_RESPONSE = Struct("ApiVersionsResponse", [
    F("error_code", INT16),
    F("api_keys", Array(Struct("ApiVersion", [
        F("api_key", INT16),
        F("min_version", INT16),
        F("max_version", INT16),
    ]))),
    F("throttle_time_ms", INT32, "1+"),
])

# -- Metadata (3): v1-8 -------------------------------------------------------------------------

METADATA_REQUEST = Struct("MetadataRequest", [
    # null: every topic (v1+); an empty list: none.
    F("topics", Array(Struct("MetadataRequestTopic", [
        F("name", STRING),
    ])), nullable="1+"),
    F("allow_auto_topic_creation", BOOL, "4+", default=True),
    F("include_cluster_authorized_operations", BOOL, "8-10"),
    F("include_topic_authorized_operations", BOOL, "8+"),
])

METADATA_RESPONSE = Struct("MetadataResponse", [
    F("throttle_time_ms", INT32, "3+"),
    F("brokers", Array(Struct("MetadataResponseBroker", [
        F("node_id", INT32),
        F("host", STRING),
        F("port", INT32),
        F("rack", STRING, "1+", nullable="1+"),
    ]))),
    F("cluster_id", STRING, "2+", nullable="2+"),
    F("controller_id", INT32, "1+", default=-1),
    F("topics", Array(Struct("MetadataResponseTopic", [
        F("error_code", INT16),
        F("name", STRING),
        F("is_internal", BOOL, "1+"),
        F("partitions", Array(Struct("MetadataResponsePartition", [
            F("error_code", INT16),
            F("partition_index", INT32),
            F("leader_id", INT32),
            F("leader_epoch", INT32, "7+", default=-1),
            F("replica_nodes", Array(INT32)),
            F("isr_nodes", Array(INT32)),
            F("offline_replicas", Array(INT32), "5+"),
        ]))),
        F("topic_authorized_operations", INT32, "8+", default=NO_AUTHORIZED_OPERATIONS),
    ]))),
    F("cluster_authorized_operations", INT32, "8-10", default=NO_AUTHORIZED_OPERATIONS),
])

# -- Produce (0): v3-8 (record batch v2) --------------------------------------------------------

PRODUCE_REQUEST = Struct("ProduceRequest", [
    F("transactional_id", STRING, "3+", nullable="3+"),
    F("acks", INT16),
    F("timeout_ms", INT32),
    F("topic_data", Array(Struct("TopicProduceData", [
        F("name", STRING),
        F("partition_data", Array(Struct("PartitionProduceData", [
            F("index", INT32),
            F("records", RECORDS, nullable="0+"),
        ]))),
    ]))),
])

PRODUCE_RESPONSE = Struct("ProduceResponse", [
    F("responses", Array(Struct("TopicProduceResponse", [
        F("name", STRING),
        F("partition_responses", Array(Struct("PartitionProduceResponse", [
            F("index", INT32),
            F("error_code", INT16),
            F("base_offset", INT64),
            F("log_append_time_ms", INT64, "2+", default=-1),
            F("log_start_offset", INT64, "5+", default=-1),
            F("record_errors", Array(Struct("BatchIndexAndErrorMessage", [
                F("batch_index", INT32),
                F("batch_index_error_message", STRING, nullable="0+"),
            ])), "8+"),
            F("error_message", STRING, "8+", nullable="8+"),
        ]))),
    ]))),
    F("throttle_time_ms", INT32, "1+"),
])

# -- Fetch (1): v4-11 (record batch v2); no fetch sessions (session id 0, epoch -1) -----------

FETCH_REQUEST = Struct("FetchRequest", [
    F("replica_id", INT32, default=-1),
    F("max_wait_ms", INT32),
    F("min_bytes", INT32),
    F("max_bytes", INT32, "3+", default=2**31 - 1),
    F("isolation_level", INT8, "4+"),
    F("session_id", INT32, "7+"),
    F("session_epoch", INT32, "7+", default=-1),
    F("topics", Array(Struct("FetchTopic", [
        F("topic", STRING),
        F("partitions", Array(Struct("FetchPartition", [
            F("partition", INT32),
            F("current_leader_epoch", INT32, "9+", default=-1),
            F("fetch_offset", INT64),
            F("log_start_offset", INT64, "5+", default=-1),
            F("partition_max_bytes", INT32),
        ]))),
    ]))),
    F("forgotten_topics_data", Array(Struct("ForgottenTopic", [
        F("topic", STRING),
        F("partitions", Array(INT32)),
    ])), "7+"),
    F("rack_id", STRING, "11+"),
])

FETCH_RESPONSE = Struct("FetchResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16, "7+"),
    F("session_id", INT32, "7+"),
    F("responses", Array(Struct("FetchableTopicResponse", [
        F("topic", STRING),
        F("partitions", Array(Struct("PartitionData", [
            F("partition_index", INT32),
            F("error_code", INT16),
            F("high_watermark", INT64),
            F("last_stable_offset", INT64, "4+", default=-1),
            F("log_start_offset", INT64, "5+", default=-1),
            F("aborted_transactions", Array(Struct("AbortedTransaction", [
                F("producer_id", INT64),
                F("first_offset", INT64),
            ])), "4+", nullable="4+"),
            F("preferred_read_replica", INT32, "11+", default=-1),
            # Stored batches: a FileSlice (or several) sent after the bytes before it.
            F("records", RECORDS, nullable="0+"),
        ]))),
    ]))),
])

# -- ListOffsets (2): v1-5 ----------------------------------------------------------------------

LIST_OFFSETS_REQUEST = Struct("ListOffsetsRequest", [
    F("replica_id", INT32, default=-1),
    F("isolation_level", INT8, "2+"),
    F("topics", Array(Struct("ListOffsetsTopic", [
        F("name", STRING),
        F("partitions", Array(Struct("ListOffsetsPartition", [
            F("partition_index", INT32),
            F("current_leader_epoch", INT32, "4+", default=-1),
            F("timestamp", INT64),  # -1 latest, -2 earliest, else a timestamp
        ]))),
    ]))),
])

LIST_OFFSETS_RESPONSE = Struct("ListOffsetsResponse", [
    F("throttle_time_ms", INT32, "2+"),
    F("topics", Array(Struct("ListOffsetsTopicResponse", [
        F("name", STRING),
        F("partitions", Array(Struct("ListOffsetsPartitionResponse", [
            F("partition_index", INT32),
            F("error_code", INT16),
            F("timestamp", INT64, "1+", default=-1),
            F("offset", INT64, "1+", default=-1),
            F("leader_epoch", INT32, "4+", default=-1),
        ]))),
    ]))),
])

# -- InitProducerId (22): v0-1 ------------------------------------------------------------------

INIT_PRODUCER_ID_REQUEST = Struct("InitProducerIdRequest", [
    F("transactional_id", STRING, nullable="0+"),
    F("transaction_timeout_ms", INT32),
])

INIT_PRODUCER_ID_RESPONSE = Struct("InitProducerIdResponse", [
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("producer_id", INT64, default=-1),
    F("producer_epoch", INT16),
])
