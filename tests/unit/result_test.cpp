#include "common/result.h"

#include <gtest/gtest.h>

namespace {

of::Result<int> half(int x) {
    if (x % 2) return of::make_error(EINVAL, "odd number " + std::to_string(x));
    return x / 2;
}

TEST(Result, CarriesValueOrError) {
    auto a = half(8);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, 4);
    auto b = half(3);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code, EINVAL);
    EXPECT_EQ(b.error().message, "odd number 3");
}

TEST(Result, ErrnoErrorNamesTheCall) {
    auto e = of::errno_error("open /nope", ENOENT);
    EXPECT_EQ(e.code, ENOENT);
    EXPECT_EQ(e.message, "open /nope: No such file or directory");
}

}  // namespace
