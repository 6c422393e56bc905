#include "nn/init.h"

namespace automodel::nn {

static thread_local bool init_on = true;

bool init_enabled() { return init_on; }
SkipInitGuard::SkipInitGuard() : prev_(init_on) { init_on = false; }
SkipInitGuard::~SkipInitGuard() { init_on = prev_; }

}  // namespace automodel::nn
