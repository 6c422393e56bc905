#include "core/storage.h"

#include "core/allocator.h"
#include "core/error.h"

namespace automodel {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  if (!device.is_cpu())
    throw Error("cannot allocate on " + device.str() + ": this build has no CUDA backend", "Storage::allocate",
                "build with a CUDA toolkit and run on a machine with a GPU");
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = CachingAllocator::cpu().allocate(nbytes);
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

Storage::~Storage() {
  if (release_)
    release_();
  else
    CachingAllocator::cpu().deallocate(data_, nbytes_);
}

}  // namespace automodel
