#include <gtest/gtest.h>

#include <memory>

#include "hakmem/proto/snapshot.h"

using namespace hakmem::proto;

namespace {
std::unique_ptr<Segment> make_segment() {
  auto s = std::make_unique<Segment>();
  s->header.magic = kMagic;
  s->header.layout_version = kLayoutVersion;
  s->header.header_size = sizeof(SegmentHeader);
  s->header.segment_size = sizeof(Segment);
  s->header.tiny_class_count = 2;
  s->header.tiny_class_size[0] = 16;
  s->header.tiny_class_size[1] = 32;
  s->header.ready.store(1);
  return s;
}
}  // namespace

TEST(Segment, PathIsUidAndPidUnderTheDir) {
  char buf[64];
  ASSERT_TRUE(segment_path("/dev/shm", 1000, 4242, buf, sizeof buf));
  EXPECT_STREQ(buf, "/dev/shm/hakmem.1000.4242");
  EXPECT_FALSE(segment_path("/dev/shm", 1000, 4242, buf, 10));
  EXPECT_STREQ(buf, "");
}

TEST(Segment, ValidationRejectsEachKindOfDamage) {
  auto s = make_segment();
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment)), SegmentCheck::Ok);
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment) - 1), SegmentCheck::TooSmall);
  s->header.ready.store(0);
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment)), SegmentCheck::NotReady);
  s->header.ready.store(1);
  s->header.segment_size = 12;
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment)), SegmentCheck::BadSize);
  s->header.layout_version = kLayoutVersion + 1;
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment)), SegmentCheck::BadVersion);
  s->header.magic = 0xdeadbeef;
  EXPECT_EQ(validate_segment(s.get(), sizeof(Segment)), SegmentCheck::BadMagic);
  // Sized but not yet written by its creator: retried later, not refused.
  auto fresh = std::make_unique<Segment>();
  EXPECT_EQ(validate_segment(fresh.get(), sizeof(Segment)), SegmentCheck::NotReady);
  fresh->header.ready.store(1);
  EXPECT_EQ(validate_segment(fresh.get(), sizeof(Segment)), SegmentCheck::BadMagic);
}

TEST(Segment, SnapshotSumsSlotsBelowTheHighWaterMarkAndDerivesTinyTotals) {
  auto s = make_segment();
  s->global.thread_slots_hwm.store(2);
  s->threads[0].tiny_class_allocs[0].store(10);  // 10 x 16 B
  s->threads[0].tiny_class_frees[0].store(4);
  s->threads[1].tiny_class_allocs[1].store(3);   // 3 x 32 B
  s->threads[1].tiny_class_frees[0].store(2);    // a remote free of a class-0 block
  s->threads[2].tiny_class_allocs[0].store(1000);  // above hwm: never counted
  const size_t pool = static_cast<size_t>(Tier::Pool);
  s->threads[0].tier[pool][static_cast<size_t>(ThreadCounter::Allocs)].store(5);
  s->threads[1].tier[pool][static_cast<size_t>(ThreadCounter::Allocs)].store(2);
  s->threads[0].tier[pool][static_cast<size_t>(ThreadCounter::AllocBytes)].store(7000);
  s->threads[1].tier[pool][static_cast<size_t>(ThreadCounter::FreeBytes)].store(2000);
  s->threads[0].tier[pool][static_cast<size_t>(ThreadCounter::Misses)].store(3);
  s->global.tier[pool][static_cast<size_t>(GlobalCounter::MappedBytes)].store(65536);
  s->knobs.value[static_cast<size_t>(Knob::TinyCap)].store(999999);  // garbage gets clamped

  Snapshot snap;
  snapshot(*s, &snap);
  const TierSnapshot& tiny = snap.tier[static_cast<size_t>(Tier::Tiny)];
  EXPECT_EQ(tiny.allocs(), 13u);
  EXPECT_EQ(tiny.frees(), 6u);
  EXPECT_EQ(tiny.live_bytes(), 10u * 16 + 3 * 32 - 6 * 16);
  EXPECT_EQ(snap.tier[pool].allocs(), 7u);
  EXPECT_EQ(snap.tier[pool].hits(), 4u);
  EXPECT_EQ(snap.tier[pool].live_bytes(), 5000u);
  EXPECT_EQ(snap.tier[pool].get(GlobalCounter::MappedBytes), 65536u);
  EXPECT_EQ(snap.knob[static_cast<size_t>(Knob::TinyCap)], 1024u);

  // The whale tier's cached bytes and cache hits: its counters plus every cache shard's.
  const size_t whale = static_cast<size_t>(Tier::Whale);
  s->global.tier[whale][static_cast<size_t>(GlobalCounter::CacheHits)].store(1);
  s->global.whale_shard[0][kWhaleShardCached].store(3u << 20);
  s->global.whale_shard[0][kWhaleShardHits].store(5);
  s->global.whale_shard[kWhaleCacheShards - 1][kWhaleShardCached].store(64u << 20);
  s->global.whale_shard[kWhaleCacheShards - 1][kWhaleShardHits].store(2);
  snapshot(*s, &snap);
  EXPECT_EQ(snap.tier[whale].get(GlobalCounter::CachedBytes), 67u << 20);
  EXPECT_EQ(snap.tier[whale].get(GlobalCounter::CacheHits), 8u);
  EXPECT_EQ(snap.tier[pool].get(GlobalCounter::CachedBytes), 0u);

  s->header.tiny_class_count = 1000;  // hostile count is bounded
  s->global.thread_slots_hwm.store(1u << 30);
  snapshot(*s, &snap);
  EXPECT_EQ(snap.tiny_class_count, kMaxTinyClasses);
  EXPECT_EQ(snap.thread_slots_used, kThreadSlots);
}
