"""Message tables of the classic group protocol and committed offsets: FindCoordinator,
JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
DescribeGroups.

Group metadata and assignments (JoinGroup ``metadata``, SyncGroup ``assignment``) are opaque
bytes the broker passes through: the leader member assigns, client side.
"""

from sluice.protocol.kafka.schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    Array,
    F,
    Struct,
)
from sluice.protocol.kafka.tables_core import NO_AUTHORIZED_OPERATIONS

# -- FindCoordinator (10): v0-2 -----------------------------------------------------------------

FIND_COORDINATOR_REQUEST = Struct("FindCoordinatorRequest", [
    F("key", STRING),
    F("key_type", INT8, "1+"),  # 0 group, 1 transaction
])

FIND_COORDINATOR_RESPONSE = Struct("FindCoordinatorResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F("error_message", STRING, "1+", nullable="1+"),
    F("node_id", INT32),
    F("host", STRING),
    F("port", INT32),
])

# -- JoinGroup (11): v0-5 -----------------------------------------------------------------------

JOIN_GROUP_REQUEST = Struct("JoinGroupRequest", [
    F("group_id", STRING),
    F("session_timeout_ms", INT32),
    F("rebalance_timeout_ms", INT32, "1+", default=-1),
    F("member_id", STRING),
    F("group_instance_id", STRING, "5+", nullable="5+"),
    F("protocol_type", STRING),
    F("protocols", Array(Struct("JoinGroupRequestProtocol", [
        F("name", STRING),
        F("metadata", BYTES),
    ]))),
])

JOIN_GROUP_RESPONSE = Struct("JoinGroupResponse", [
    F("throttle_time_ms", INT32, "2+"),
    F("error_code", INT16),
    F("generation_id", INT32, default=-1),
    F("protocol_name", STRING),
    F("leader", STRING),
    F("member_id", STRING),
    F("members", Array(Struct("JoinGroupResponseMember", [
        F("member_id", STRING),
        F("group_instance_id", STRING, "5+", nullable="5+"),
        F("metadata", BYTES),
    ]))),
])

# -- SyncGroup (14): v0-3 -----------------------------------------------------------------------

SYNC_GROUP_REQUEST = Struct("SyncGroupRequest", [
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", STRING, "3+", nullable="3+"),
    F("assignments", Array(Struct("SyncGroupRequestAssignment", [
        F("member_id", STRING),
        F("assignment", BYTES),
    ]))),
])

SYNC_GROUP_RESPONSE = Struct("SyncGroupResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F("assignment", BYTES),
])

# -- Heartbeat (12): v0-3 -----------------------------------------------------------------------

HEARTBEAT_REQUEST = Struct("HeartbeatRequest", [
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", STRING, "3+", nullable="3+"),
])

HEARTBEAT_RESPONSE = Struct("HeartbeatResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
])

# -- LeaveGroup (13): v0-3 (v3+ leaves in batches) ----------------------------------------------

LEAVE_GROUP_REQUEST = Struct("LeaveGroupRequest", [
    F("group_id", STRING),
    F("member_id", STRING, "0-2"),
    F("members", Array(Struct("MemberIdentity", [
        F("member_id", STRING),
        F("group_instance_id", STRING, nullable="3+"),
    ])), "3+"),
])

LEAVE_GROUP_RESPONSE = Struct("LeaveGroupResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F("members", Array(Struct("MemberResponse", [
        F("member_id", STRING),
        F("group_instance_id", STRING, nullable="3+"),
        F("error_code", INT16),
    ])), "3+"),
])

# -- OffsetCommit (8): v0-7 ---------------------------------------------------------------------

OFFSET_COMMIT_REQUEST = Struct("OffsetCommitRequest", [
    F("group_id", STRING),
    F("generation_id_or_member_epoch", INT32, "1+", default=-1),
    F("member_id", STRING, "1+"),
    F("group_instance_id", STRING, "7+", nullable="7+"),
    F("retention_time_ms", INT64, "2-4", default=-1),
    F("topics", Array(Struct("OffsetCommitRequestTopic", [
        F("name", STRING),
        F("partitions", Array(Struct("OffsetCommitRequestPartition", [
            F("partition_index", INT32),
            F("committed_offset", INT64),
            F("committed_leader_epoch", INT32, "6+", default=-1),
            F("commit_timestamp", INT64, "1", default=-1),
            F("committed_metadata", STRING, nullable="0+"),
        ]))),
    ]))),
])

OFFSET_COMMIT_RESPONSE = Struct("OffsetCommitResponse", [
    F("throttle_time_ms", INT32, "3+"),
    F("topics", Array(Struct("OffsetCommitResponseTopic", [
        F("name", STRING),
        F("partitions", Array(Struct("OffsetCommitResponsePartition", [
            F("partition_index", INT32),
            F("error_code", INT16),
        ]))),
    ]))),
])

# -- OffsetFetch (9): v0-5 ----------------------------------------------------------------------

OFFSET_FETCH_REQUEST = Struct("OffsetFetchRequest", [
    F("group_id", STRING),
    # null (v2+): every partition the group has committed.
    F("topics", Array(Struct("OffsetFetchRequestTopic", [
        F("name", STRING),
        F("partition_indexes", Array(INT32)),
    ])), nullable="2+"),
])

OFFSET_FETCH_RESPONSE = Struct("OffsetFetchResponse", [
    F("throttle_time_ms", INT32, "3+"),
    F("topics", Array(Struct("OffsetFetchResponseTopic", [
        F("name", STRING),
        F("partitions", Array(Struct("OffsetFetchResponsePartition", [
            F("partition_index", INT32),
            F("committed_offset", INT64),
            F("committed_leader_epoch", INT32, "5+", default=-1),
            F("metadata", STRING, nullable="0+"),
            F("error_code", INT16),
        ]))),
    ]))),
    F("error_code", INT16, "2+"),
])

# -- ListGroups (16): v0-2 ----------------------------------------------------------------------

LIST_GROUPS_REQUEST = Struct("ListGroupsRequest", [])

LIST_GROUPS_RESPONSE = Struct("ListGroupsResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F("groups", Array(Struct("ListedGroup", [
        F("group_id", STRING),
        F("protocol_type", STRING),
    ]))),
])

# -- DescribeGroups (15): v0-4 ------------------------------------------------------------------

DESCRIBE_GROUPS_REQUEST = Struct("DescribeGroupsRequest", [
    F("groups", Array(STRING)),
    F("include_authorized_operations", BOOL, "3+"),
])

DESCRIBE_GROUPS_RESPONSE = Struct("DescribeGroupsResponse", [
    F("throttle_time_ms", INT32, "1+"),
    F("groups", Array(Struct("DescribedGroup", [
        F("error_code", INT16),
        F("group_id", STRING),
        F("group_state", STRING),
        F("protocol_type", STRING),
        F("protocol_data", STRING),
        F("members", Array(Struct("DescribedGroupMember", [
            F("member_id", STRING),
            F("group_instance_id", STRING, "4+", nullable="4+"),
            F("client_id", STRING),
            F("client_host", STRING),
            F("member_metadata", BYTES),
            F("member_assignment", BYTES),
        ]))),
        F("authorized_operations", INT32, "3+", default=NO_AUTHORIZED_OPERATIONS),
    ]))),
])
