#include "layer/row_exchange.h"

#include <switchyard/error.h>

#include <chrono>
#include <cstring>

#include "core/huge_pages.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::layer {
namespace {

void prefix(const std::vector<int64_t>& counts, std::vector<int64_t>& displs) {
  displs.assign(counts.size(), 0);
  for (size_t q = 1; q < counts.size(); ++q) displs[q] = displs[q - 1] + counts[q - 1];
}

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

void count(MoECache::ExpertParallel::Traffic& t, const std::vector<int64_t>& out,
           const std::vector<int64_t>& in, int rank, int64_t elem_bytes) {
  for (size_t q = 0; q < out.size(); ++q) {
    if (int(q) == rank) continue;
    t.sent += out[q] * elem_bytes;
    t.received += in[q] * elem_bytes;
  }
}

// Adds the wall time of its scope to `seconds`.
class Clock {
 public:
  explicit Clock(double& seconds) : seconds_(seconds), start_(std::chrono::steady_clock::now()) {}
  ~Clock() {
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double& seconds_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

void RowExchange::route(dist::Communicator& comm, const int32_t* token, const int32_t* dest,
                        const int32_t* expert, const float* weight, int64_t rows, int64_t tokens,
                        double& seconds) {
  const int P = comm.size();
  send_counts_.assign(size_t(P), 0);
  meta_send_counts_.assign(size_t(P), 0);
  sent_token_.clear();
  sent_meta_.resize(size_t(rows));
  seen_.assign(size_t(tokens), 0);
  int64_t first_token = 0;  // this destination's first entry in sent_token_
  int32_t current = -1;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t q = dest[r];
    if (q < current || q >= P)
      fail(
          "expert parallelism: row {} goes to rank {} after rank {} (of {}); rows must be in "
          "destination order",
          r, q, current, P);
    if (q != current) {
      current = q;
      first_token = int64_t(sent_token_.size());
    }
    // seen_ holds (index + 1) into sent_token_; an index before this destination's first is
    // another destination's: unseen here.
    const int32_t t = token[r];
    int64_t slot = int64_t(seen_[size_t(t)]) - 1 - first_token;
    if (slot < 0) {
      slot = int64_t(sent_token_.size()) - first_token;
      sent_token_.push_back(t);
      seen_[size_t(t)] = int32_t(sent_token_.size());
      ++send_counts_[size_t(q)];
    }
    sent_meta_[size_t(r)] = RowMeta{expert[r], int32_t(slot), weight[r]};
    ++meta_send_counts_[size_t(q)];
  }
  prefix(send_counts_, send_displs_);
  prefix(meta_send_counts_, meta_send_displs_);
  const Clock clock(seconds);
  recv_counts_.resize(size_t(P));
  meta_recv_counts_.resize(size_t(P));
  comm.alltoall(send_counts_.data(), recv_counts_.data());
  comm.alltoall(meta_send_counts_.data(), meta_recv_counts_.data());
  prefix(recv_counts_, recv_displs_);
  prefix(meta_recv_counts_, meta_recv_displs_);
  recv_tokens_ = sum(recv_counts_);
  recv_meta_.resize(size_t(sum(meta_recv_counts_)));
  comm.alltoallv(sent_meta_.data(), meta_send_counts_.data(), meta_send_displs_.data(),
                 recv_meta_.data(), meta_recv_counts_.data(), meta_recv_displs_.data(),
                 sizeof(RowMeta));
  recv_slot_.resize(recv_meta_.size());
  for (int q = 0, i = 0; q < P; ++q)
    for (int64_t j = 0; j < meta_recv_counts_[size_t(q)]; ++j, ++i) {
      const int32_t slot = recv_meta_[size_t(i)].slot;
      if (slot < 0 || slot >= recv_counts_[size_t(q)])
        fail("expert parallelism: rank {} received a row for token slot {} of {} from rank {}",
             comm.rank(), slot, recv_counts_[size_t(q)], q);
      recv_slot_[size_t(i)] = recv_displs_[size_t(q)] + slot;
    }
}

void RowExchange::send_tokens(dist::Communicator& comm, const float* x, int64_t d,
                              std::vector<float>& out, double& seconds) const {
  const int64_t sent = int64_t(sent_token_.size());
  resize_on_huge_pages(staging_, size_t(sent * d));
  cpu::gather_rows(sent, d, x, sent_token_.data(), staging_.data());
  resize_on_huge_pages(out, size_t(recv_tokens_ * d));
  const Clock clock(seconds);
  comm.alltoallv(staging_.data(), send_counts_.data(), send_displs_.data(), out.data(),
                 recv_counts_.data(), recv_displs_.data(), size_t(d) * sizeof(float));
}

void RowExchange::return_tokens(dist::Communicator& comm, const float* partial, int64_t d,
                                float* acc, double& seconds) const {
  back_.resize(sent_token_.size() * size_t(d));
  {
    const Clock clock(seconds);
    comm.alltoallv(partial, recv_counts_.data(), recv_displs_.data(), back_.data(),
                   send_counts_.data(), send_displs_.data(), size_t(d) * sizeof(float));
  }
  for (size_t j = 0; j < sent_token_.size(); ++j) {
    float* dst = acc + int64_t(sent_token_[j]) * d;
    const float* src = back_.data() + int64_t(j) * d;
    for (int64_t k = 0; k < d; ++k) dst[k] += src[k];
  }
}

void RowExchange::return_rows(dist::Communicator& comm, const float* values, float* out,
                              double& seconds) const {
  const Clock clock(seconds);
  comm.alltoallv(values, meta_recv_counts_.data(), meta_recv_displs_.data(), out,
                 meta_send_counts_.data(), meta_send_displs_.data(), sizeof(float));
}

void RowExchange::count_dispatch(int rank, int64_t d, Traffic& t) const {
  count(t, send_counts_, recv_counts_, rank, d * int64_t(sizeof(float)));
  count(t, meta_send_counts_, meta_recv_counts_, rank, int64_t(sizeof(RowMeta)));
}

void RowExchange::count_tokens_back(int rank, int64_t d, Traffic& t) const {
  count(t, recv_counts_, send_counts_, rank, d * int64_t(sizeof(float)));
}

void RowExchange::count_tokens_forward(int rank, int64_t d, Traffic& t) const {
  count(t, send_counts_, recv_counts_, rank, d * int64_t(sizeof(float)));
}

void RowExchange::count_rows_back(int rank, Traffic& t) const {
  count(t, meta_recv_counts_, meta_send_counts_, rank, int64_t(sizeof(float)));
}

}  // namespace switchyard::layer
