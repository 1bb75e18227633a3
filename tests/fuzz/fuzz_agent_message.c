/* fuzz_agent_message.c: libFuzzer target for the aggregator's decoder of
 * agents' messages: protobuf unpack, then the checks a batch must pass
 * before it may reach the store. */
#include "receiver.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Cairn__AgentMessage *message = cairn__agent_message__unpack(NULL, size, data);
    if (!message)
        return 0;
    char reason[256];
    if (message->body_case == CAIRN__AGENT_MESSAGE__BODY_BATCH)
        (void)receiver_check_batch(message->batch, reason, sizeof reason);
    cairn__agent_message__free_unpacked(message, NULL);
    return 0;
}
