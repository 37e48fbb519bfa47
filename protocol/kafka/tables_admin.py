"""Message tables of the admin APIs: CreateTopics, DeleteTopics, DescribeConfigs.

Version ranges stop before each API's first flexible version (CreateTopics v5, DeleteTopics
v4, DescribeConfigs v4): librdkafka 2.0 asks for CreateTopics 0-4, DeleteTopics 0-1 and
DescribeConfigs 0-1, kafka-python negotiates down to what is advertised.
"""

from sluice.protocol.kafka.schema import BOOL, INT8, INT16, INT32, STRING, Array, F, Struct

# -- CreateTopics (19): v0-4 --------------------------------------------------------------------

CREATE_TOPICS_REQUEST = Struct("CreateTopicsRequest", [
    F("topics", Array(Struct("CreatableTopic", [
        F("name", STRING),
        F("num_partitions", INT32),  # -1: the broker's default (v4+)
        F("replication_factor", INT16),  # -1: the broker's default (v4+)
        F("assignments", Array(Struct("CreatableReplicaAssignment", [
            F("partition_index", INT32),
            F("broker_ids", Array(INT32)),
        ]))),
        F("configs", Array(Struct("CreatableTopicConfig", [
            F("name", STRING),
            F("value", STRING, nullable="0+"),
        ]))),
    ]))),
    F("timeout_ms", INT32, default=60_000),
    F("validate_only", BOOL, "1+"),
])

CREATE_TOPICS_RESPONSE = Struct("CreateTopicsResponse", [
    F("throttle_time_ms", INT32, "2+"),
    F("topics", Array(Struct("CreatableTopicResult", [
        F("name", STRING),
        F("error_code", INT16),
        F("error_message", STRING, "1+", nullable="0+"),
    ]))),
])

# -- DeleteTopics (20): v0-3 --------------------------------------------------------------------

DELETE_TOPICS_REQUEST = Struct("DeleteTopicsRequest", [
    F("topic_names", Array(STRING)),
    F("timeout_ms", INT32),
])

DELETE_TOPICS_RESPONSE = Struct("DeleteTopicsResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("responses", Array(Struct("DeletableTopicResult", [
        F("name", STRING),
        F("error_code", INT16),
    ]))),
])

# -- DescribeConfigs (32): v0-3 -----------------------------------------------------------------

DESCRIBE_CONFIGS_REQUEST = Struct("DescribeConfigsRequest", [
    F("resources", Array(Struct("DescribeConfigsResource", [
        F("resource_type", INT8),  # 2 topic, 4 broker
        F("resource_name", STRING),
        F("configuration_keys", Array(STRING), nullable="0+"),  # null: all of them
    ]))),
    F("include_synonyms", BOOL, "1+"),
    F("include_documentation", BOOL, "3+"),
])

DESCRIBE_CONFIGS_RESPONSE = Struct("DescribeConfigsResponse", [
    F("throttle_time_ms", INT32),
    F("results", Array(Struct("DescribeConfigsResult", [
        F("error_code", INT16),
        F("error_message", STRING, nullable="0+"),
        F("resource_type", INT8),
        F("resource_name", STRING),
        F("configs", Array(Struct("DescribeConfigsResourceResult", [
            F("name", STRING),
            F("value", STRING, nullable="0+"),
            F("read_only", BOOL),
            F("config_source", INT8, "1+", default=-1),
            F("is_default", BOOL, "0"),
            F("is_sensitive", BOOL),
            F("synonyms", Array(Struct("DescribeConfigsSynonym", [
                F("name", STRING),
                F("value", STRING, nullable="0+"),
                F("source", INT8),
            ])), "1+"),
            F("config_type", INT8, "3+"),
            F("documentation", STRING, "3+", nullable="0+"),
        ]))),
    ]))),
])
