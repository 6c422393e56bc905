#include "core/storage.h"

#include "core/error.h"

namespace automodel {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  const DeviceMemory& memory = device_memory(device);
  void* data = memory.allocate(nbytes);  // before the Storage exists: a failure leaves nothing to free
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->memory_ = &memory;
  s->nbytes_ = nbytes;
  s->device_ = device;
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, std::function<void()> release, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->release_ = release ? std::move(release) : [] {};
  return s;
}

void Storage::free_memory() {
  AM_CHECK(memory_ != nullptr, "Storage::free_memory: only owned storage can give its memory back");
  if (data_ == nullptr) return;
  memory_->deallocate(data_, nbytes_);
  data_ = nullptr;
}

void Storage::restore_memory() {
  AM_CHECK(memory_ != nullptr, "Storage::restore_memory: only owned storage can take memory back");
  if (data_ == nullptr && nbytes_ > 0) data_ = memory_->allocate(nbytes_);
}

Storage::~Storage() {
  if (release_)
    release_();
  else if (memory_ && data_)
    memory_->deallocate(data_, nbytes_);
}

}  // namespace automodel
