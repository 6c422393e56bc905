#include "core/grad_node.h"

namespace automodel {

static std::atomic<uint64_t> next_sequence_nr{0};
static thread_local bool grad_mode = true;

Node::Node() : sequence_nr(next_sequence_nr.fetch_add(1, std::memory_order_relaxed)) {}

bool grad_enabled() { return grad_mode; }
void set_grad_enabled(bool enabled) { grad_mode = enabled; }

}  // namespace automodel
