"""Every Kafka request and response class by name, as compiled from the tables by ``apis``.

Nested structs are attributes of their message class (``FetchResponse.PartitionData``).
"""

from sluice.protocol.kafka.apis import APIS

ProduceRequest = APIS[0].request.cls
ProduceResponse = APIS[0].response.cls
FetchRequest = APIS[1].request.cls
FetchResponse = APIS[1].response.cls
ListOffsetsRequest = APIS[2].request.cls
ListOffsetsResponse = APIS[2].response.cls
MetadataRequest = APIS[3].request.cls
MetadataResponse = APIS[3].response.cls
OffsetCommitRequest = APIS[8].request.cls
OffsetCommitResponse = APIS[8].response.cls
OffsetFetchRequest = APIS[9].request.cls
OffsetFetchResponse = APIS[9].response.cls
FindCoordinatorRequest = APIS[10].request.cls
FindCoordinatorResponse = APIS[10].response.cls
JoinGroupRequest = APIS[11].request.cls
JoinGroupResponse = APIS[11].response.cls
HeartbeatRequest = APIS[12].request.cls
HeartbeatResponse = APIS[12].response.cls
LeaveGroupRequest = APIS[13].request.cls
LeaveGroupResponse = APIS[13].response.cls
SyncGroupRequest = APIS[14].request.cls
SyncGroupResponse = APIS[14].response.cls
DescribeGroupsRequest = APIS[15].request.cls
DescribeGroupsResponse = APIS[15].response.cls
ListGroupsRequest = APIS[16].request.cls
ListGroupsResponse = APIS[16].response.cls
ApiVersionsRequest = APIS[18].request.cls
ApiVersionsResponse = APIS[18].response.cls
CreateTopicsRequest = APIS[19].request.cls
CreateTopicsResponse = APIS[19].response.cls
DeleteTopicsRequest = APIS[20].request.cls
DeleteTopicsResponse = APIS[20].response.cls
InitProducerIdRequest = APIS[22].request.cls
InitProducerIdResponse = APIS[22].response.cls
DescribeConfigsRequest = APIS[32].request.cls
DescribeConfigsResponse = APIS[32].response.cls

__all__ = [
    "ApiVersionsRequest",
    "ApiVersionsResponse",
    "CreateTopicsRequest",
    "CreateTopicsResponse",
    "DeleteTopicsRequest",
    "DeleteTopicsResponse",
    "DescribeConfigsRequest",
    "DescribeConfigsResponse",
    "DescribeGroupsRequest",
    "DescribeGroupsResponse",
    "FetchRequest",
    "FetchResponse",
    "FindCoordinatorRequest",
    "FindCoordinatorResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "InitProducerIdRequest",
    "InitProducerIdResponse",
    "JoinGroupRequest",
    "JoinGroupResponse",
    "LeaveGroupRequest",
    "LeaveGroupResponse",
    "ListGroupsRequest",
    "ListGroupsResponse",
    "ListOffsetsRequest",
    "ListOffsetsResponse",
    "MetadataRequest",
    "MetadataResponse",
    "OffsetCommitRequest",
    "OffsetCommitResponse",
    "OffsetFetchRequest",
    "OffsetFetchResponse",
    "ProduceRequest",
    "ProduceResponse",
    "SyncGroupRequest",
    "SyncGroupResponse",
]
