// Large buffers on transparent huge pages. The first touch of fresh memory costs a page fault per
// 4 KiB page (about 10 µs each on our VMs: 0.27 s for the first 100 MB of a prefill's MoE
// scratch), and streaming gigabytes of weights through 4 KiB pages misses the TLB. Linux with THP
// in "madvise" mode (Debian's default) backs a region with 2 MiB pages once it is advised, before
// it is touched.
#pragma once

#include <cstddef>
#include <vector>

namespace switchyard {

// Advises the 2 MiB-aligned part of [p, p + bytes); a no-op for small regions or where the
// system has no THP.
void advise_huge_pages(const void* p, size_t bytes);

// v.resize(n), advising fresh storage before the new elements are written.
template <class T>
void resize_on_huge_pages(std::vector<T>& v, size_t n) {
  if (n > v.capacity()) {
    std::vector<T> fresh;
    fresh.reserve(n);
    advise_huge_pages(fresh.data(), n * sizeof(T));
    fresh.assign(v.begin(), v.end());
    v.swap(fresh);
  }
  v.resize(n);
}

}  // namespace switchyard
